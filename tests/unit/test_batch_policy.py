"""Job specs: retries, timeouts, constraints, unique host, dependencies, and
errors that name the key (and the line, from a file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral.frameworks.batch import JobSpecError, load_job, parse_job
from corral.frameworks.constraints import Constraint, parse_constraint
from corral.frameworks.types import Offer
from corral.resources import Resources


def job(*groups: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"name": "j", **top, "tasks": [{"command": "true", **g} for g in groups]}


def test_policy_keys_are_read() -> None:
    spec = parse_job(
        job(
            {"name": "a"},
            {
                "name": "b",
                "after": ["a"],
                "retries": 3,
                "backoff_s": 0.5,
                "timeout_s": 60,
                "constraints": ["rack == r1", "zone in [a, b]"],
                "unique_host": True,
            },
        )
    )
    policy = spec.groups[1].policy
    assert policy.after == ("a",)
    assert policy.retries == 3
    assert policy.timeout_s == 60.0
    assert policy.constraints == (Constraint("rack", "==", ("r1",)), Constraint("zone", "in", ("a", "b")))
    assert policy.unique_host
    assert [policy.backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert spec.groups[0].policy.retries == 0


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ({"retries": -1}, "tasks[0].retries: must be an integer from 0 to 100"),
        ({"retries": True}, "tasks[0].retries"),
        ({"timeout_s": 0}, "tasks[0].timeout_s: must be > 0"),
        ({"backoff_s": "soon"}, "tasks[0].backoff_s: must be a number of seconds"),
        ({"constraints": ["rack ~ r1"]}, "tasks[0].constraints[0]: 'rack ~ r1' is not a constraint"),
        (
            {"constraints": ["zone in []"]},
            "tasks[0].constraints[0]: 'zone in []': the list after 'in' is empty",
        ),
        ({"unique_host": "yes"}, "tasks[0].unique_host: must be true or false"),
        ({"after": ["nope"]}, "tasks[0].after: no task group named 'nope'"),
        ({"name": "a", "after": "a"}, "tasks[0].after: group 'a' cannot depend on itself"),
        ({"retires": 3}, "tasks[0]: unknown key(s) ['retires']"),
        ({"cpus": -1}, "tasks[0].cpus: must be >= 0"),
    ],
)
def test_bad_policies_are_refused_naming_the_key(group: dict[str, Any], expected: str) -> None:
    with pytest.raises(JobSpecError) as e:
        parse_job(job(group))
    assert expected in str(e.value)


def test_a_dependency_cycle_is_refused_naming_the_cycle() -> None:
    with pytest.raises(JobSpecError, match=r"cycle: a -> c -> b -> a"):
        parse_job(
            job({"name": "a", "after": ["c"]}, {"name": "b", "after": ["a"]}, {"name": "c", "after": ["b"]})
        )
    parse_job(job({"name": "a"}, {"name": "b", "after": ["a"]}, {"name": "c", "after": ["a", "b"]}))


def test_unknown_top_level_keys_and_bad_schedules() -> None:
    with pytest.raises(JobSpecError, match=r"unknown key\(s\) at the top level: \['retry'\]"):
        parse_job(job({}, retry=1))
    with pytest.raises(JobSpecError, match=r"schedule: .*needs 5 fields"):
        parse_job(job({}, schedule="every day"))
    assert parse_job(job({}, schedule="*/5 * * * *")).schedule == "*/5 * * * *"


def test_errors_from_a_file_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'name = "x"\n\n[[tasks]]\nname = "a"\ncommand = "true"\n\n'
        '[[tasks]]\nname = "b"\ncommand = "true"\nretries = -2\nfoo = 1\n'
    )
    with pytest.raises(JobSpecError, match=r"job.toml:11: tasks\[1\]: unknown key\(s\) \['foo'\]"):
        load_job(path)
    path.write_text('name = "x"\n[[tasks]]\ncommand = "true"\nretries = -2\n')
    with pytest.raises(JobSpecError, match=r"job.toml:4: tasks\[0\].retries"):
        load_job(path)


def offer(attributes: dict[str, str], hostname: str = "h1") -> Offer:
    return Offer("o1", "a1", hostname, Resources.of(cpus=1), attributes)


@pytest.mark.parametrize(
    ("text", "attributes", "ok"),
    [
        ("rack == r1", {"rack": "r1"}, True),
        ("rack == r1", {"rack": "r2"}, False),
        ("rack == r1", {}, False),
        ("rack != r1", {"rack": "r2"}, True),
        ("rack != r1", {}, True),
        ("zone in [a, 'b']", {"zone": "b"}, True),
        ("zone in [a,b]", {"zone": "c"}, False),
        ("zone not in [a, b]", {"zone": "c"}, True),
        ("gpu exists", {"gpu": "1"}, True),
        ("gpu exists", {}, False),
        ("hostname == h1", {}, True),
    ],
)
def test_constraints_match_attributes(text: str, attributes: dict[str, str], ok: bool) -> None:
    assert parse_constraint(text).matches(offer(attributes).attributes, "h1") is ok
    assert str(parse_constraint(str(parse_constraint(text)))) == str(parse_constraint(text))


def test_the_example_pipeline_parses() -> None:
    spec = load_job(Path(__file__).resolve().parents[2] / "examples" / "jobs" / "pipeline.toml")
    assert [g.policy.after for g in spec.groups] == [(), ("fetch",), ("flaky-transform",)]
    assert spec.groups[1].policy.retries == 5
