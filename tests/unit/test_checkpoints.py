"""Checkpoint records and the status update log: what survives, what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.proto import messages_pb2 as pb
from corral.slave.checkpoints import (
    CheckpointError,
    Checkpoints,
    TaskCheckpoint,
    append_ack,
    append_update,
    read_record,
    replay,
    write_record,
)


def status(task: str, state: int, uuid: bytes) -> pb.TaskStatus:
    return pb.TaskStatus(task_id=task, framework_id="fw", state=state, uuid=uuid)  # type: ignore[arg-type]


def test_a_record_round_trips_and_a_flipped_byte_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.json"
    write_record(path, {"agent_id": "a-1"}, durable=True)
    assert read_record(path) == {"agent_id": "a-1"}
    path.write_bytes(path.read_bytes().replace(b"a-1", b"a-2"))
    with pytest.raises(CheckpointError) as e:
        read_record(path)
    assert str(path) in str(e.value)
    assert "checksum mismatch" in str(e.value)
    assert "--recover=cleanup" in str(e.value)


def test_a_torn_record_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "task.json"
    write_record(path, {"x": 1})
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_record(path)


def test_the_update_log_replays_pending_updates_in_order(tmp_path: Path) -> None:
    log = tmp_path / "updates.log"
    a, b, c = status("t", pb.TASK_STARTING, b"a"), status("t", pb.TASK_RUNNING, b"b"), status("t", 2, b"c")
    for s in (a, b):
        append_update(log, s)
    append_ack(log, b"a")
    append_update(log, c)
    stream = replay(log)
    assert [u.uuid for u in stream.updates] == [b"a", b"b", b"c"]
    assert [u.uuid for u in stream.pending] == [b"b", b"c"]
    assert stream.latest == c


def test_a_record_cut_short_at_the_end_is_dropped_and_cut_off_the_file(tmp_path: Path) -> None:
    log = tmp_path / "updates.log"
    append_update(log, status("t", pb.TASK_RUNNING, b"a"))
    whole = log.read_bytes()
    append_update(log, status("t", pb.TASK_FINISHED, b"b"))
    log.write_bytes(log.read_bytes()[:-7])
    assert [u.uuid for u in replay(log).updates] == [b"a"]
    assert log.read_bytes() == whole  # the next append starts on a fresh line
    append_ack(log, b"a")
    assert replay(log).pending == []


def test_damage_inside_the_log_is_refused_with_the_record_number(tmp_path: Path) -> None:
    log = tmp_path / "updates.log"
    for u in (b"a", b"b", b"c"):
        append_update(log, status("t", pb.TASK_RUNNING, u))
    lines = log.read_bytes().split(b"\n")
    lines[1] = lines[1][:20] + b"X" + lines[1][21:]
    log.write_bytes(b"\n".join(lines))
    with pytest.raises(CheckpointError, match="record 2: checksum mismatch"):
        replay(log)


@given(st.binary(max_size=200))
def test_garbage_never_crashes_replay(tmp_path_factory: pytest.TempPathFactory, junk: bytes) -> None:
    log = tmp_path_factory.mktemp("log") / "updates.log"
    append_update(log, status("t", pb.TASK_RUNNING, b"a"))
    with log.open("ab") as f:
        f.write(junk + b"\n")
    error = None
    try:
        replay(log)
    except CheckpointError as e:
        error = str(e)
    assert error is None or str(log) in error


def test_an_agent_checkpoint_round_trips(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    cp.save_agent("agent-1")
    cp.save_framework(pb.FrameworkInfo(id="fw/1", name="x"))
    task = TaskCheckpoint("fw/1", pb.TaskInfo(task_id="t"), "t-123", tmp_path / "sb")
    cp.save_task(task)
    append_update(cp.log_path("t-123"), status("t", pb.TASK_RUNNING, b"u"))
    done = TaskCheckpoint("fw/1", pb.TaskInfo(task_id="d"), "d-123", tmp_path / "sb2")
    cp.save_task(done)
    cp.complete_task(done, 42.0)
    loaded = cp.load()
    assert loaded.agent_id == "agent-1"
    assert list(loaded.frameworks) == ["fw/1"]
    by_id = {t.container_id: t for t in loaded.tasks}
    assert by_id["t-123"].info.task_id == "t"
    assert [u.uuid for u in by_id["t-123"].updates.pending] == [b"u"]
    assert by_id["d-123"].completed_at == 42.0
    assert not cp.log_path("d-123").exists()
