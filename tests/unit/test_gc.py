"""The sandbox GC policy (Mesos' rule): pure, so checked by table and property."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from corral.slave.gc import MAX_REMOVALS_PER_ROUND, Finished, collectable, due, max_age_s

WEEK = 7 * 86400.0


def test_the_age_shrinks_as_the_disk_fills() -> None:
    assert max_age_s(WEEK, 0.0, 0.1) == WEEK * 0.9
    assert max_age_s(WEEK, 0.5, 0.1) == WEEK * 0.4  # 2.8 days
    assert max_age_s(WEEK, 0.9, 0.1) == 0.0  # past the headroom: everything finished goes
    assert max_age_s(WEEK, 1.0, 0.1) == 0.0


def test_due_names_the_old_ones_oldest_first() -> None:
    finished = [Finished("b", 500.0), Finished("a", 100.0), Finished("c", 990.0)]
    assert due(finished, 1000.0, 1000.0, 0.5, 0.1) == ["a", "b"]  # max age 400 s
    assert due(finished, 1000.0, 1000.0, 0.0, 0.1) == ["a"]  # max age 900 s
    assert due(finished, 1000.0, 1000.0, 0.95, 0.1) == ["a", "b", "c"]


@given(
    st.lists(st.floats(0, 1e6), max_size=20),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_a_fuller_disk_never_keeps_more(ends: list[float], low: float, high: float) -> None:
    low, high = sorted((low, high))
    finished = [Finished(str(i), t) for i, t in enumerate(ends)]
    assert set(due(finished, 1e6, WEEK, low, 0.1)) <= set(due(finished, 1e6, WEEK, high, 0.1))


def test_collectable_names_tasks_by_their_sandbox_at_most_a_round_at_a_time() -> None:
    completed = {("f", f"t{i}"): Path(f"/w/sandboxes/f/t{i}-c") for i in range(MAX_REMOVALS_PER_ROUND + 5)}
    ended = {key: float(i) for i, key in enumerate(completed)}
    due_now = collectable(completed, ended, 1e9, WEEK, 0.5, 0.1)
    assert due_now == list(completed)[:MAX_REMOVALS_PER_ROUND]  # oldest first, one round's worth
    # A task with no recorded end counts as ended now: kept.
    assert collectable({("f", "x"): Path("/w/x")}, {}, 1e9, WEEK, 0.5, 0.1) == []
