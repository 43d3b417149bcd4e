"""Checkpoint records and the agent's journal: what survives, what is refused."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.proto import messages_pb2 as pb
from corral.slave import checkpoints
from corral.slave.checkpoints import (
    COMPACT_MIN_BYTES,
    CheckpointError,
    Checkpoints,
    CheckpointWriteError,
    TaskCheckpoint,
    read_record,
    write_record,
)


def status(task: str, state: int, uuid: bytes) -> pb.TaskStatus:
    return pb.TaskStatus(task_id=task, framework_id="fw", state=state, uuid=uuid)  # type: ignore[arg-type]


def task(container_id: str, tmp_path: Path) -> TaskCheckpoint:
    info = pb.TaskInfo(task_id=container_id.split("-", maxsplit=1)[0])
    return TaskCheckpoint("fw", info, container_id, tmp_path / "sb")


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


def test_the_journal_replays_tasks_and_pending_updates_in_order(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    cp.save_agent("agent-1")
    cp.save_framework(pb.FrameworkInfo(id="fw", name="x"))
    cp.save_task(task("t-1", tmp_path))
    cp.save_task(task("d-1", tmp_path))
    a, b, c = status("t", pb.TASK_STARTING, b"a"), status("t", pb.TASK_RUNNING, b"b"), status("t", 2, b"c")
    for s in (a, b):
        cp.record_update("t-1", s)
    cp.record_ack("t-1", b"a")
    cp.record_update("t-1", c)
    cp.record_update("d-1", status("d", pb.TASK_FINISHED, b"d"))
    cp.record_ack("d-1", b"d")
    cp.complete_task("d-1", 42.0)
    cp.close()
    for _ in range(2):  # load compacts; the compacted journal says the same
        loaded = Checkpoints(tmp_path).load()
        assert loaded.agent_id == "agent-1"
        assert list(loaded.frameworks) == ["fw"]
        by_id = {t.container_id: t for t in loaded.tasks}
        assert [u.uuid for u in by_id["t-1"].updates.pending] == [b"b", b"c"]
        assert by_id["t-1"].updates.latest == c
        assert by_id["d-1"].completed_at == 42.0
        assert by_id["d-1"].updates.pending == []


def test_an_acknowledged_latest_state_survives_compaction(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    cp.save_task(task("t-1", tmp_path))
    cp.record_update("t-1", status("t", pb.TASK_RUNNING, b"r"))
    cp.record_ack("t-1", b"r")
    cp.compact()
    (loaded,) = Checkpoints(tmp_path).load().tasks
    assert loaded.updates.pending == []
    assert loaded.updates.latest is not None
    assert loaded.updates.latest.state == pb.TASK_RUNNING


def test_forgotten_tasks_are_gone_and_the_journal_stays_small(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    padding = "x" * 2000
    for i in range(2000):  # ~4 MiB of events: compacted on the way
        t = task(f"t{i}-1", tmp_path)
        t.info.name = padding
        cp.save_task(t)
        cp.record_update(t.container_id, status(f"t{i}", pb.TASK_FINISHED, b"u"))
        cp.record_ack(t.container_id, b"u")
        cp.complete_task(t.container_id, 1.0)
        cp.remove_task(t.container_id)
    cp.close()
    assert cp.journal.stat().st_size < 2 * COMPACT_MIN_BYTES
    assert Checkpoints(tmp_path).load().tasks == []


def test_a_line_cut_short_at_the_end_is_dropped_and_cut_off(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    cp.save_task(task("t-1", tmp_path))
    cp.record_update("t-1", status("t", pb.TASK_RUNNING, b"a"))
    cp.close()
    whole = cp.journal.read_bytes()
    cp.record_update("t-1", status("t", pb.TASK_FINISHED, b"b"))
    cp.close()
    cp.journal.write_bytes(cp.journal.read_bytes()[:-7])
    (loaded,) = Checkpoints(tmp_path).load().tasks
    assert [u.uuid for u in loaded.updates.pending] == [b"a"]
    assert cp.journal.read_bytes() == whole  # later appends start on a fresh line


def test_damage_inside_the_journal_is_refused_with_the_record_number(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    cp.save_task(task("t-1", tmp_path))
    for u in (b"a", b"b", b"c"):
        cp.record_update("t-1", status("t", pb.TASK_RUNNING, u))
    cp.close()
    lines = cp.journal.read_bytes().split(b"\n")
    lines[1] = lines[1][:20] + b"X" + lines[1][21:]
    cp.journal.write_bytes(b"\n".join(lines))
    with pytest.raises(CheckpointError, match="record 2: checksum mismatch") as e:
        Checkpoints(tmp_path).load()
    assert str(cp.journal) in str(e.value)


def test_an_event_about_an_unknown_task_is_refused(tmp_path: Path) -> None:
    cp = Checkpoints(tmp_path)
    cp.save_task(task("t-1", tmp_path))
    cp.close()
    with cp.journal.open("ab") as f:
        other = Checkpoints(tmp_path / "other")
        other.save_task(task("x-1", tmp_path))
        other.record_update("x-1", status("x", pb.TASK_RUNNING, b"a"))
        other.close()
        f.write(other.journal.read_bytes().split(b"\n")[1] + b"\n")
    with pytest.raises(CheckpointError, match="record 2: update of unknown container 'x-1'"):
        Checkpoints(tmp_path).load()


@settings(max_examples=50)
@given(st.binary(max_size=200))
def test_garbage_never_crashes_the_replay(tmp_path_factory: pytest.TempPathFactory, junk: bytes) -> None:
    root = tmp_path_factory.mktemp("j")
    cp = Checkpoints(root)
    cp.save_task(task("t-1", root))
    cp.close()
    with cp.journal.open("ab") as f:
        f.write(junk + b"\n")
    error = None
    try:
        Checkpoints(root).load()
    except CheckpointError as e:
        error = str(e)
    assert error is None or str(cp.journal) in error


class _ShortWrites:
    """``os`` as the journal sees it, with write(2) writing at most a few bytes."""

    def __init__(self, most: int) -> None:
        self.most = most
        self.calls = 0

    def write(self, fd: int, data: bytes) -> int:
        self.calls += 1
        return os.write(fd, bytes(data[: self.most]))

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)


def test_short_writes_are_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    short = _ShortWrites(7)
    monkeypatch.setattr(checkpoints, "os", short)
    cp = Checkpoints(tmp_path)
    cp.save_agent("agent-1")
    cp.save_task(task("t-1", tmp_path))
    cp.record_update("t-1", status("t", pb.TASK_RUNNING, b"a"))
    cp.close()
    assert short.calls > 20  # the lines really went in pieces
    monkeypatch.undo()
    loaded = Checkpoints(tmp_path).load()
    assert loaded.agent_id == "agent-1"
    assert [u.uuid for u in loaded.tasks[0].updates.pending] == [b"a"]


class _FullDisk:
    """``os`` with a disk that fills up after ``room`` more bytes (write(2) then
    writes what fits and fails the next call with ENOSPC, as Linux does)."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, bytes(data[: self.room]))
        self.room -= n
        return n

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)


@pytest.mark.parametrize("room", [0, 1, 30, 200])
def test_a_full_disk_leaves_no_half_event_and_the_journal_goes_on_when_there_is_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    cp = Checkpoints(tmp_path)
    cp.save_task(task("t-1", tmp_path))
    whole = cp.journal.read_bytes()
    disk = _FullDisk(room)
    monkeypatch.setattr(checkpoints, "os", disk)
    error = None
    for i in range(100):  # some event fails once the room is used up
        try:
            cp.record_update("t-1", status("t", pb.TASK_RUNNING, b"%d" % i))
        except CheckpointWriteError as e:
            error = e
            break
    assert error is not None
    assert "No space left on device" in str(error)
    assert str(cp.journal) in str(error)
    written = cp.journal.read_bytes()
    assert written.endswith(b"\n")  # whole events only
    assert written.startswith(whole)
    in_memory = len(checkpoints.replay(cp.journal).tasks["t-1"].updates.pending)
    assert len(cp._state.tasks["t-1"].updates.pending) == in_memory  # the failed one is not kept
    disk.room = 10**6  # room again: the next event lands after the last whole one
    cp.record_update("t-1", status("t", pb.TASK_FINISHED, b"last"))
    cp.close()
    monkeypatch.undo()
    pending = Checkpoints(tmp_path).load().tasks[0].updates.pending
    assert len(pending) == in_memory + 1
    assert pending[-1].uuid == b"last"


def test_a_failed_write_of_the_agent_record_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "agent.json"
    write_record(path, {"agent_id": "a-1"})
    monkeypatch.setattr(checkpoints, "os", _FullDisk(10))
    with pytest.raises(CheckpointWriteError):
        write_record(path, {"agent_id": "a-2"})
    monkeypatch.undo()
    assert read_record(path) == {"agent_id": "a-1"}
    assert not path.with_name("agent.json.tmp").exists()
