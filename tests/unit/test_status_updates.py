"""slave/status_updates.py: at-least-once, in-order delivery per task with a fake sender."""

from __future__ import annotations

import math

import pytest

from corral.proto import messages_pb2 as pb
from corral.slave.status_updates import StatusUpdateManager


class FakeSend:
    """Records every batch; ``connected`` decides what send returns."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.connected = True

    def __call__(self, updates: list[pb.TaskStatus]) -> bool:
        self.batches.append([(u.task_id, u.state) for u in updates])
        return self.connected

    def take(self) -> list[list[tuple[str, int]]]:
        out, self.batches = self.batches, []
        return out


def status(task_id: str, state: int = pb.TASK_RUNNING, framework_id: str = "f1") -> pb.TaskStatus:
    return pb.TaskStatus(task_id=task_id, state=state, framework_id=framework_id)


@pytest.fixture
def send() -> FakeSend:
    return FakeSend()


@pytest.fixture
def sum_(send: FakeSend) -> StatusUpdateManager:
    return StatusUpdateManager(send, initial_backoff_s=2.0, max_backoff_s=10.0)


def test_only_the_head_per_task_is_sent(send: FakeSend, sum_: StatusUpdateManager) -> None:
    running = sum_.update(status("t1", pb.TASK_RUNNING), now=0.0)
    sum_.update(status("t1", pb.TASK_FINISHED), now=0.1)
    sum_.update(status("t2", pb.TASK_RUNNING), now=0.2)  # another task: its own head
    assert send.take() == [[("t1", pb.TASK_RUNNING)], [("t2", pb.TASK_RUNNING)]]
    assert [s.state for s in sum_.pending()[("f1", "t1")]] == [pb.TASK_RUNNING, pb.TASK_FINISHED]
    assert sum_.latest(("f1", "t1")).state == pb.TASK_FINISHED  # type: ignore[union-attr]
    assert running.uuid


def test_ack_of_head_sends_next_and_drops_finished_streams(send: FakeSend, sum_: StatusUpdateManager) -> None:
    first = sum_.update(status("t1", pb.TASK_RUNNING), now=0.0)
    second = sum_.update(status("t1", pb.TASK_FINISHED), now=0.0)
    send.take()
    assert sum_.acknowledge(("f1", "t1"), first.uuid, now=1.0) is first
    assert send.take() == [[("t1", pb.TASK_FINISHED)]]
    assert sum_.acknowledge(("f1", "t1"), second.uuid, now=2.0) is second
    assert send.take() == []
    assert sum_.pending() == {}
    assert sum_.latest(("f1", "t1")) is None


def test_stale_or_duplicate_ack_is_ignored(send: FakeSend, sum_: StatusUpdateManager) -> None:
    first = sum_.update(status("t1", pb.TASK_RUNNING), now=0.0)
    second = sum_.update(status("t1", pb.TASK_FINISHED), now=0.0)
    send.take()
    assert sum_.acknowledge(("f1", "t1"), second.uuid, now=0.5) is None  # not the head yet
    assert sum_.acknowledge(("f1", "t1"), b"bogus", now=0.5) is None
    assert sum_.acknowledge(("f1", "other"), first.uuid, now=0.5) is None
    assert sum_.acknowledge(("f1", "t1"), first.uuid, now=1.0) is first
    assert sum_.acknowledge(("f1", "t1"), first.uuid, now=1.0) is None  # duplicate
    assert [s.uuid for s in sum_.pending()[("f1", "t1")]] == [second.uuid]
    assert send.take() == [[("t1", pb.TASK_FINISHED)]]  # sent exactly once


def test_retry_backs_off_exponentially_up_to_max(send: FakeSend, sum_: StatusUpdateManager) -> None:
    sum_.update(status("t1"), now=0.0)
    send.take()
    # Backoff 2, 4, 8, then capped at 10: resends at t = 2, 6, 14, 24, 34.
    expected_resends = [2.0, 6.0, 14.0, 24.0, 34.0]
    resent_at = []
    for tenth in range(0, 350):
        now = tenth / 10
        sum_.tick(now)
        if send.take():
            resent_at.append(now)
    assert resent_at == expected_resends


def test_ack_resets_backoff_for_the_next_update(send: FakeSend, sum_: StatusUpdateManager) -> None:
    first = sum_.update(status("t1"), now=0.0)
    sum_.update(status("t1", pb.TASK_FINISHED), now=0.0)
    for now in (2.0, 6.0, 14.0):
        sum_.tick(now)
    send.take()
    sum_.acknowledge(("f1", "t1"), first.uuid, now=20.0)
    assert send.take() == [[("t1", pb.TASK_FINISHED)]]
    sum_.tick(21.9)
    assert send.take() == []
    sum_.tick(22.0)  # 20 + initial 2 s, not + 16
    assert send.take() == [[("t1", pb.TASK_FINISHED)]]


def test_tick_batches_due_heads(send: FakeSend, sum_: StatusUpdateManager) -> None:
    sum_.update(status("t1"), now=0.0)
    sum_.update(status("t2"), now=1.0)
    send.take()
    sum_.tick(2.0)
    assert send.take() == [[("t1", pb.TASK_RUNNING)]]
    sum_.tick(3.0)
    assert send.take() == [[("t2", pb.TASK_RUNNING)]]
    sum_.tick(10.0)
    assert send.take() == [[("t1", pb.TASK_RUNNING), ("t2", pb.TASK_RUNNING)]]


def test_disconnected_waits_for_resend_all(send: FakeSend, sum_: StatusUpdateManager) -> None:
    send.connected = False
    sum_.update(status("t1"), now=0.0)
    sum_.update(status("t2", framework_id="f2"), now=0.0)
    assert len(send.take()) == 2  # tried once each
    sum_.tick(1e9)
    assert send.take() == []  # no retries while disconnected: next_retry is infinite
    assert math.isinf(min(s.next_retry for s in sum_._streams.values()))
    send.connected = True
    sum_.resend_all(now=100.0)
    assert send.take() == [[("t1", pb.TASK_RUNNING), ("t2", pb.TASK_RUNNING)]]
    sum_.tick(101.9)
    assert send.take() == []
    sum_.tick(102.0)  # backoff restarts at the initial 2 s
    assert len(send.take()) == 1


def test_order_per_task_is_preserved_through_retries(send: FakeSend, sum_: StatusUpdateManager) -> None:
    states = [pb.TASK_STARTING, pb.TASK_RUNNING, pb.TASK_KILLING, pb.TASK_KILLED]
    for s in states:
        sum_.update(status("t1", s), now=0.0)
    delivered = []
    now = 0.0
    while sum_.pending():
        now += 5.0
        sum_.tick(now)  # a retry may duplicate ...
        head = sum_.pending()[("f1", "t1")][0]
        delivered.append(head.state)
        sum_.acknowledge(("f1", "t1"), head.uuid, now)
    assert delivered == states
    sent = [state for batch in send.take() for _, state in batch]
    # ... but never reorders: the sent sequence, duplicates removed, is the original.
    assert list(dict.fromkeys(sent)) == states


def test_uuids_are_unique_and_set_on_the_update(sum_: StatusUpdateManager) -> None:
    made = [sum_.update(status(f"t{i % 3}"), now=0.0) for i in range(30)]
    uuids = [m.uuid for m in made]
    assert all(len(u) == 16 for u in uuids)
    assert len(set(uuids)) == 30


def test_forget_framework_drops_only_its_streams(send: FakeSend, sum_: StatusUpdateManager) -> None:
    sum_.update(status("t1", framework_id="f1"), now=0.0)
    sum_.update(status("t1", framework_id="f2"), now=0.0)
    sum_.forget_framework("f1")
    assert list(sum_.pending()) == [("f2", "t1")]
    send.take()
    sum_.tick(100.0)
    assert send.take() == [[("t1", pb.TASK_RUNNING)]]
