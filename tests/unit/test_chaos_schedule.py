"""The chaos schedule: the same seed gives the same faults, every fault is
healed before the settle period, faults do not overlap, targets exist."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.chaos.schedule import (
    KINDS,
    LEADER,
    MAX_EVENTS,
    ScheduleConfig,
    ScheduleError,
    Targets,
    make_schedule,
    possible_kinds,
)

TARGETS = Targets(
    masters=("master1", "master2", "master3"),
    agents=("agent1", "agent2", "agent3"),
    zookeepers=("zk1", "zk2", "zk3"),
)

targets_st = st.builds(
    Targets,
    masters=st.lists(st.sampled_from(["master1", "master2", "master3"]), min_size=1, unique=True).map(tuple),
    agents=st.lists(st.sampled_from(["agent1", "agent2", "agent5"]), min_size=1, unique=True).map(tuple),
    zookeepers=st.sampled_from([(), ("zk1",), ("zk1", "zk2", "zk3"), ("zk1", "zk2", "zk3", "zk4", "zk5")]),
)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    duration=st.floats(min_value=1, max_value=3600),
    targets=targets_st,
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, unique=True),
    max_fault=st.floats(min_value=2, max_value=30),
)
def test_same_seed_same_schedule_bounded_and_healed_in_time(
    seed: int, duration: float, targets: Targets, kinds: list[str], max_fault: float
) -> None:
    cfg = ScheduleConfig(max_fault_s=max_fault)
    events = make_schedule(seed, duration, targets, kinds, cfg)
    assert events == make_schedule(seed, duration, targets, kinds, cfg)
    assert len(events) <= MAX_EVENTS
    usable = set(possible_kinds(kinds, targets))
    previous_heal = 0.0
    for e in events:
        assert e.kind in usable
        assert e.at_s >= cfg.warmup_s
        assert e.at_s >= previous_heal  # one fault at a time
        assert cfg.min_fault_s <= e.duration_s + 0.01
        assert e.duration_s <= cfg.max_fault_s + 0.01
        assert e.heal_at_s <= duration - cfg.settle_s + 1e-9  # healed before the quiet end
        previous_heal = e.heal_at_s
        role = e.kind.split("-")[0]
        pool = {"master": (*targets.masters, LEADER), "agent": targets.agents, "zk": targets.zookeepers}[role]
        assert set(e.targets) <= set(pool)
        if e.kind == "zk-quorum":
            assert len(set(e.targets)) == len(targets.zookeepers) // 2 + 1  # a majority: no quorum
        else:
            assert len(e.targets) == 1


def test_different_seeds_differ_and_a_minute_has_several_faults() -> None:
    a = make_schedule(1, 60, TARGETS)
    b = make_schedule(2, 60, TARGETS)
    assert a != b
    assert 3 <= len(a) <= 12
    assert a[0].at_s == ScheduleConfig().warmup_s


def test_every_kind_comes_up_in_a_long_run() -> None:
    kinds = {e.kind for e in make_schedule(7, 600, TARGETS)}
    assert kinds == set(KINDS)


def test_no_zookeeper_faults_without_an_ensemble_of_our_own() -> None:
    targets = Targets(masters=("master1",), agents=("agent1",))
    kinds = {e.kind for e in make_schedule(3, 600, targets)}
    assert kinds
    assert not any(k.startswith("zk-") for k in kinds)
    assert make_schedule(3, 600, targets, ["zk-node"]) == []


def test_too_short_a_run_has_no_fault() -> None:
    assert make_schedule(1, 14, TARGETS) == []  # 3 s warm-up and 10 s settle leave 1 s: too short


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"kinds": ["master-explode"]}, "unknown kind"),
        ({"duration_s": 0}, "--duration"),
        ({"config": ScheduleConfig(min_fault_s=5, max_fault_s=2)}, "fault durations"),
        ({"config": ScheduleConfig(min_gap_s=-1)}, "gaps"),
    ],
)
def test_bad_arguments_are_refused_naming_them(kwargs: dict[str, object], problem: str) -> None:
    args: dict[str, object] = {"seed": 1, "duration_s": 60, "targets": TARGETS, **kwargs}
    with pytest.raises(ScheduleError, match=problem):
        make_schedule(**args)  # type: ignore[arg-type]
