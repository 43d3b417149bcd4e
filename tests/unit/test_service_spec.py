"""frameworks/service: bad specs are refused naming the key (and the line),
and the rolling-update planner keeps its promises (a hypothesis walk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.frameworks.service.plan import Live, min_healthy, plan
from corral.frameworks.service.spec import ServiceSpecError, load_service, parse_service, same_deployment
from corral.resources import RangeSet

BASE: dict[str, Any] = {"name": "web", "command": "serve", "instances": 2}


def test_a_full_spec_parses() -> None:
    spec = parse_service(
        {
            **BASE,
            "ports": 2,
            "env": {"A": 1},
            "constraints": ["unique hostname", "unique rack", "zone == a"],
            "health_check": {"type": "http", "port_index": 1, "path": "/healthz", "interval_s": 2},
            "restart": {"backoff_s": 0.5},
            "update": {"max_unavailable": 0, "max_surge": 2},
        }
    )
    assert spec.unique_host
    assert spec.unique_attributes == ("rack",)
    assert [str(c) for c in spec.constraints] == ["zone == a"]
    task = spec.task("web.1.v3", 3, RangeSet.of([(31000, 31001)]))
    assert task.env["PORT0"] == "31000"
    assert task.env["PORT1"] == "31001"
    assert task.env["A"] == "1"
    assert task.health_check is not None
    assert task.health_check.port == 31001
    assert task.health_check.path == "/healthz"
    assert task.resources.range("ports") == RangeSet.of([(31000, 31001)])
    assert spec.backoff(1) == 0.5
    assert spec.backoff(3) == 2.0


BAD = [
    ({"colour": "red"}, "unknown key(s) ['colour']"),
    ({"name": "Web_1"}, "name: must be 1-40 lowercase"),
    ({"command": ""}, "command: must be a non-empty string"),
    ({"instances": -1}, "instances: must be an integer from 0 to 1000"),
    ({"cpus": -1}, "cpus: must be >= 0"),
    ({"mem": "lots"}, "mem: must be a number"),
    ({"ports": 100}, "ports: must be an integer from 0 to 16"),
    ({"env": {"A": [1]}}, "env: must be a table of strings"),
    ({"constraints": ["rack ~ r1"]}, "constraints[0]:"),
    ({"constraints": ["rack == r1", "rack in [r2, r3]"]}, "constraints: no value of 'rack' meets them all"),
    (
        {"instances": 3, "constraints": ["unique rack", "rack in [r1, r2]"]},
        "'unique rack' with rack limited to ['r1', 'r2'] can place at most 2 of 3",
    ),
    ({"health_check": {"type": "grpc"}}, "health_check.type: must be one of"),
    ({"health_check": {"type": "tcp"}}, "health_check.port_index: the service has 0 port(s)"),
    ({"health_check": {"type": "command"}}, "health_check.command: a command check needs"),
    ({"health_check": {"type": "tcp", "port": 80, "timeout": 1}}, "health_check: unknown key(s) ['timeout']"),
    ({"health_check": {"type": "http", "port": 80, "path": "x"}}, "health_check.path: must start with '/'"),
    ({"restart": {"backoff_s": -1}}, "restart.backoff_s: must be >= 0"),
    ({"update": {"max_unavailable": 0, "max_surge": 0}}, "max_unavailable and max_surge cannot both be 0"),
    ({"update": {"max_surge": 1.5}}, "update.max_surge: must be an integer"),
    ({"update": {"speed": 1}}, "update: unknown key(s) ['speed']"),
    ({"update": 3}, "update: must be a table"),
]


@pytest.mark.parametrize(("change", "expected"), BAD, ids=[e for _, e in BAD])
def test_bad_specs_are_refused_naming_the_key(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(ServiceSpecError) as err:
        parse_service({**BASE, **change})
    assert expected in str(err.value)


def test_errors_in_a_file_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "svc.toml"
    path.write_text('command = "x"\n\n[health_check]\ntype = "tcp"\nport = 99999\n')
    with pytest.raises(ServiceSpecError, match=r"svc\.toml:5: health_check\.port: must be an integer"):
        load_service(path)
    path.write_text('command = "x"\ninstaces = 3\n')
    with pytest.raises(ServiceSpecError, match=r"svc\.toml:2: unknown key\(s\) \['instaces'\]"):
        load_service(path)


def test_scaling_is_not_a_new_version() -> None:
    assert same_deployment({**BASE, "instances": 5}, BASE)
    assert not same_deployment({**BASE, "command": "other"}, BASE)


# -- the planner --------------------------------------------------------------


def test_steady_state_starts_and_stops_unhealthy_then_newest_first() -> None:
    live = [Live("a", 1, True, 1), Live("b", 1, False, 2), Live("c", 1, True, 3)]
    assert plan(1, 3, 1, 1, live[:2]).launch == 1
    assert plan(1, 1, 1, 1, live).kill == ("b", "c")


def test_rolling_update_with_surge_only_never_lowers_healthy() -> None:
    old = [Live(f"o{i}", 1, True, i) for i in range(3)]
    step = plan(2, 3, 0, 1, old)
    assert step == type(step)(1, ())  # surge one first, stop nothing
    step = plan(2, 3, 0, 1, [*old, Live("n", 2, False, 9)])
    assert step.launch == 0
    assert step.kill == ()
    step = plan(2, 3, 0, 1, [*old, Live("n", 2, True, 9)])
    assert step.kill == ("o0",)  # the oldest goes once the new one is healthy
    assert step.launch == 1


@settings(max_examples=100, deadline=None)
@given(
    instances=st.integers(0, 6),
    max_unavailable=st.integers(0, 3),
    max_surge=st.integers(0, 3),
    start=st.lists(st.booleans(), max_size=8),
    outcomes=st.lists(st.booleans(), min_size=1, max_size=40),
)
def test_a_walk_of_updates_keeps_healthy_at_or_above_the_minimum(
    instances: int, max_unavailable: int, max_surge: int, start: list[bool], outcomes: list[bool]
) -> None:
    """Apply plans step by step while new instances turn healthy or fail at
    random: the planner's own stops never take healthy below the minimum
    (unless it already was), and the running count stays within the surge."""
    if max_unavailable == 0 and max_surge == 0:
        max_surge = 1
    live = [Live(f"o{i}", 1, h, i) for i, h in enumerate(start[:instances])]
    seq = len(live)
    floor = min_healthy(instances, max_unavailable)
    for outcome in outcomes:
        before = sum(i.healthy for i in live)
        step = plan(2, instances, max_unavailable, max_surge, live)
        live = [i for i in live if i.id not in step.kill]
        after = sum(i.healthy for i in live)
        assert after >= min(before, floor), (step, live)
        for _ in range(step.launch):
            seq += 1
            live.append(Live(f"n{seq}", 2, False, seq))
        if any(i.version != 2 for i in live) or step.launch:
            assert len(live) <= max(instances + max_surge, len([i for i in live if i.version == 1]))
        # One starting instance of the new version settles: healthy, or it fails and goes.
        starting = next((i for i in live if i.version == 2 and not i.healthy), None)
        if starting is not None:
            live.remove(starting)
            if outcome:
                live.append(Live(starting.id, 2, True, starting.seq))
    # Enough successes in a row end with only the new version.
    live = [Live(i.id, i.version, i.healthy or i.version == 2, i.seq) for i in live]
    for _ in range(4 * (instances + 2)):
        step = plan(2, instances, max_unavailable, max_surge, live)
        live = [i for i in live if i.id not in step.kill]
        for _ in range(step.launch):
            seq += 1
            live.append(Live(f"n{seq}", 2, True, seq))
    assert all(i.version == 2 for i in live)
    assert len(live) == instances


def test_the_documented_specs_parse() -> None:
    import re
    import tomllib

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "frameworks.md").read_text()
    section = doc.split("## The bundled service framework", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.S)
    assert block is not None
    assert parse_service(tomllib.loads(block[1])).unique_attributes == ("rack",)
    spec, _ = load_service(root / "examples" / "services" / "web.toml")
    assert spec.health is not None
