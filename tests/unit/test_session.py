"""slave/session.py: reconnect backoff and heartbeats of the agent's session, time passed in."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from corral.slave.session import Outcome, Session, outcome


def test_dials_back_off_from_the_minimum_doubling_to_the_maximum() -> None:
    s = Session(reconnect_min_s=0.05, reconnect_max_s=0.5)
    assert [s.next_delay(False) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    # A session that got registered starts the backoff over.
    assert s.next_delay(True) == 0.05
    assert s.next_delay(False) == 0.1


def test_heartbeats_go_every_interval_while_registered() -> None:
    s = Session()
    assert not s.heartbeat_due(100.0)  # not registered
    s.registered(heartbeat_interval_s=2.0)
    assert s.heartbeat_due(100.0)
    assert not s.heartbeat_due(101.9)
    assert s.heartbeat_due(102.0)
    s.ended()
    assert not s.heartbeat_due(200.0)
    s.registered(0.0)  # the master's default
    assert s.heartbeat_interval_s == 5.0
    assert s.heartbeat_due(200.0)


def test_what_the_end_of_a_session_means() -> None:
    assert outcome("INVALID_ARGUMENT", "resources: bad") is Outcome.REJECTED
    assert outcome("FAILED_PRECONDITION", "agent a1 is gone") is Outcome.GONE
    assert outcome("FAILED_PRECONDITION", "not the leader") is Outcome.LOST
    assert outcome("UNAVAILABLE", "") is Outcome.LOST


@given(
    st.floats(0.001, 1.0),
    st.floats(1.0, 60.0),
    st.lists(st.booleans(), max_size=40),
)
def test_every_delay_is_within_the_bounds_and_never_shrinks_without_a_registration(
    low: float, high: float, registered: list[bool]
) -> None:
    s = Session(reconnect_min_s=low, reconnect_max_s=high)
    last = 0.0
    for was_registered in registered:
        delay = s.next_delay(was_registered)
        assert low <= delay <= high
        if was_registered:
            assert delay == low
        else:
            assert delay >= last
        last = delay


@given(st.floats(0.1, 30.0), st.lists(st.floats(0.0, 10.0), max_size=50))
def test_heartbeats_are_at_least_an_interval_apart_and_none_is_skipped(
    interval: float, steps: list[float]
) -> None:
    s = Session()
    s.registered(interval)
    now, sent = 0.0, []
    for step in steps:
        now += step
        if s.heartbeat_due(now):
            sent.append(now)
    assert all(b - a >= interval for a, b in itertools.pairwise(sent))
    # Ticked now, the last beat is never more than an interval (plus one step) old.
    if sent and steps:
        assert now - sent[-1] < interval + max(steps)
