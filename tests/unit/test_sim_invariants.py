"""Each invariant catches its planted violation in a hand-made history, and
a clean history passes."""

from __future__ import annotations

from corral.proto import messages_pb2 as pb
from corral.resources import Resources
from corral.sim.invariants import Observer, batch_task

SMALL = Resources.parse("cpus:1;mem:128")
TOTAL = Resources.parse("cpus:2;mem:1024")


def observer() -> Observer:
    return Observer(lambda: 5.0)


def end(task_id: str, uuid: bytes, state: int = pb.TASK_FINISHED) -> pb.TaskStatus:
    return pb.TaskStatus(
        task_id=task_id,
        framework_id="fw",
        state=state,
        uuid=uuid,
        source=pb.TaskStatus.SOURCE_AGENT,  # type: ignore[arg-type]
    )


def kinds(o: Observer) -> list[str]:
    return [v.kind for v in o.violations]


def test_a_clean_history_passes() -> None:
    o = observer()
    o.container_started("a1", ("fw", "j.g.0.a1"), SMALL, TOTAL)
    o.container_ended("a1", ("fw", "j.g.0.a1"))
    o.framework_update("fw", end("j.g.0.a1", b"u1"))
    o.framework_update("fw", end("j.g.0.a1", b"u1"))  # a duplicate, same uuid
    o.framework_acknowledged("fw", b"u1")
    o.terminal_acknowledged("a1", end("j.g.0.a1", b"u1"), b"u1")
    o.compare({"a1": set()}, {"a1": set()})
    assert o.violations == []


def test_task_twice_and_over_commit() -> None:
    o = observer()
    o.container_started("a1", ("fw", "t"), SMALL, TOTAL)
    o.container_started("a2", ("fw", "t"), SMALL, TOTAL)
    assert kinds(o) == ["task-twice"]
    o = observer()
    o.container_started("a1", ("fw", "t1"), SMALL, TOTAL)
    o.container_started("a1", ("fw", "t2"), SMALL, TOTAL)
    o.container_started("a1", ("fw", "t3"), SMALL, TOTAL)  # 3 cpus on 2
    assert kinds(o) == ["over-commit"]


def test_two_ends_ack_undelivered_and_finished_rerun() -> None:
    o = observer()
    o.framework_update("fw", end("t", b"u1", pb.TASK_FAILED))
    o.framework_update("fw", end("t", b"u2", pb.TASK_FINISHED))
    assert kinds(o) == ["two-ends"]
    o = observer()
    # An ack of another update (the framework acknowledged u1) took u2 off.
    o.framework_acknowledged("fw", b"u1")
    o.terminal_acknowledged("a1", end("t", b"u2"), b"u1")
    assert kinds(o) == ["ack-undelivered"]
    o = observer()
    o.framework_update("fw", end("j.g.0.a1", b"u1"))
    o.container_started("a1", ("fw", "j.g.0.a2"), SMALL, TOTAL)
    assert kinds(o) == ["finished-rerun"]


def test_master_and_agents_disagree() -> None:
    o = observer()
    o.compare({"a1": {("fw", "t1")}}, {"a1": {("fw", "t1"), ("fw", "t2")}})
    assert kinds(o) == ["disagree"]


def test_batch_task_of_an_attempt() -> None:
    assert batch_task("job-1a2b3c.g.4.a12") == "job-1a2b3c.g.4"
    assert batch_task("plain") == "plain"


def test_the_masters_own_ack_is_owed_a_terminal_state_told_to_the_framework() -> None:
    # The master acknowledged (with the update's own uuid) the end of a task
    # it set aside; its LOST, lost with a broken stream, comes again by
    # reconciliation (LOST, or UNKNOWN from a new leader): no violation.
    for told in (pb.TASK_LOST, pb.TASK_UNKNOWN):
        o = observer()
        o.terminal_acknowledged("a1", end("t", b"u1"), b"u1")
        o.framework_update("fw", pb.TaskStatus(task_id="t", framework_id="fw", state=told))
        o.finish()
        assert o.violations == []
    # Told before the ack: nothing owed either.
    o = observer()
    o.framework_update("fw", pb.TaskStatus(task_id="t", framework_id="fw", state=pb.TASK_LOST))
    o.terminal_acknowledged("a1", end("t", b"u1"), b"u1")
    o.finish()
    assert o.violations == []
    # Never told: the end is lost to the framework.
    o = observer()
    o.terminal_acknowledged("a1", end("t", b"u1"), b"u1")
    o.framework_update("fw", pb.TaskStatus(task_id="t", framework_id="fw", state=pb.TASK_RUNNING))
    assert o.violations == []
    o.finish()
    assert kinds(o) == ["ack-undelivered"]
