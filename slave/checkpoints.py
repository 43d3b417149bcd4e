"""The agent's checkpoints: what a restarted agent needs to carry on.

Layout under ``<work_dir>/meta/`` (Mesos keeps the same things under
``meta/slaves/<id>/``)::

    agent.json                         agent id and the boot it was written in
    frameworks/<framework key>.json    FrameworkInfo of each framework with tasks here
    tasks/<container id>/task.json     TaskInfo, framework id, container id, sandbox;
                                       ``completed_at`` once its terminal update was acked
    tasks/<container id>/updates.log   every status update and acknowledgement, appended

Every JSON record carries a CRC-32 of its canonical body and is written
atomically (temporary file, rename; ``durable`` adds the fsyncs). The update
log is append-only, one record a line: ``<crc32 hex> <json>``. A record cut
short at the end of the log (the agent died mid-append: the update was never
sent) is dropped; any other damage is a :class:`CheckpointError` naming the
file, and the agent refuses to start rather than guess.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from corral.errors import CorralError
from corral.proto import messages_pb2 as pb

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class CheckpointError(CorralError):
    """A checkpoint file is torn or corrupt; the agent cannot trust what it says."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"checkpoint {path} is corrupt: {reason}. The agent will not guess what runs here; "
            "start it with --recover=cleanup to kill the tasks it left behind and start afresh"
        )


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def write_record(path: Path, data: dict[str, Any], *, durable: bool = False) -> None:
    """Write ``data`` with its checksum atomically: temporary file, (fsync,) rename."""
    body = _canonical(data)
    blob = json.dumps({"crc32": zlib.crc32(body), "data": data}, sort_keys=True).encode() + b"\n"
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, blob)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``; None if there is none. Raises CheckpointError if damaged."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({e.strerror})") from e
    try:
        outer = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(path, f"not valid JSON ({len(raw)} bytes; torn write?)") from None
    if not isinstance(outer, dict) or not isinstance(outer.get("data"), dict):
        raise CheckpointError(path, "not a checkpoint record (no 'data' object)")
    data: dict[str, Any] = outer["data"]
    if outer.get("crc32") != zlib.crc32(_canonical(data)):
        raise CheckpointError(path, "checksum mismatch")
    return data


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def boot_id() -> str:
    """This boot of the host (containers do not survive a reboot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


# -- the status update log ---------------------------------------------------------


def _encode_line(record: dict[str, Any]) -> bytes:
    body = _canonical(record)
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def append_update(path: Path, status: pb.TaskStatus) -> None:
    """Append an update record (before it is sent)."""
    _append(path, {"op": "update", "status": base64.b64encode(status.SerializeToString()).decode()})


def append_ack(path: Path, uuid: bytes) -> None:
    """Append an acknowledgement record (before the next update goes)."""
    _append(path, {"op": "ack", "uuid": uuid.hex()})


def _append(path: Path, record: dict[str, Any]) -> None:
    # One write(2) of a whole line with O_APPEND: a SIGKILL cannot split it;
    # only a host crash can leave a short last line, which replay drops.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, _encode_line(record))
    finally:
        os.close(fd)


@dataclass
class UpdateStream:
    """A task's update log replayed: every update in order, and which were acked."""

    updates: list[pb.TaskStatus] = field(default_factory=list)
    acked: set[bytes] = field(default_factory=set)

    @property
    def pending(self) -> list[pb.TaskStatus]:
        """Updates not acknowledged yet, in order."""
        return [u for u in self.updates if u.uuid not in self.acked]

    @property
    def latest(self) -> pb.TaskStatus | None:
        return self.updates[-1] if self.updates else None


def replay(path: Path) -> UpdateStream:
    """Read a task's update log; a torn last record is cut off the file."""
    stream = UpdateStream()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return stream
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({e.strerror})") from e
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    for number, line in enumerate(lines, 1):
        record = _decode_line(path, number, line)
        if record["op"] == "update":
            try:
                status = pb.TaskStatus.FromString(base64.b64decode(record["status"], validate=True))
            except Exception:
                raise CheckpointError(path, f"record {number}: not a TaskStatus") from None
            stream.updates.append(status)
        else:
            stream.acked.add(bytes.fromhex(record["uuid"]))
    if tail:
        with open(path, "r+b") as f:
            f.truncate(len(raw) - len(tail))
    return stream


def _decode_line(path: Path, number: int, line: bytes) -> dict[str, Any]:
    crc, _, body = line.partition(b" ")
    try:
        ok = int(crc, 16) == zlib.crc32(body)
    except ValueError:
        ok = False
    if not ok:
        raise CheckpointError(path, f"record {number}: checksum mismatch")
    try:
        record = json.loads(body)
        if record.get("op") == "ack":
            bytes.fromhex(record["uuid"])
        elif record.get("op") != "update" or not isinstance(record.get("status"), str):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CheckpointError(path, f"record {number}: not an update or acknowledgement") from None
    assert isinstance(record, dict)
    return record


# -- the whole agent -----------------------------------------------------------------


@dataclass
class TaskCheckpoint:
    """One task as checkpointed: enough to re-attach to it or report how it ended."""

    framework_id: str
    info: pb.TaskInfo
    container_id: str
    sandbox: Path
    completed_at: float | None = None
    updates: UpdateStream = field(default_factory=UpdateStream)


@dataclass
class AgentCheckpoint:
    agent_id: str = ""
    boot_id: str = ""
    frameworks: dict[str, pb.FrameworkInfo] = field(default_factory=dict)
    tasks: list[TaskCheckpoint] = field(default_factory=list)


class Checkpoints:
    """Reads and writes the checkpoints of one agent's work directory.

    Writes of task records and updates skip fsync: they must outlive the agent
    process, not the host (a reboot ends every container anyway, see
    docs/architecture.md, Agent). The agent id is written durably.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.meta = work_dir / "meta"
        self.tasks_dir = self.meta / "tasks"
        self.frameworks_dir = self.meta / "frameworks"

    # -- writing
    def save_agent(self, agent_id: str) -> None:
        self.meta.mkdir(parents=True, exist_ok=True)
        write_record(self.meta / "agent.json", {"agent_id": agent_id, "boot_id": boot_id()}, durable=True)

    def forget_agent(self) -> None:
        """Start over as a new agent: no id, no tasks, no frameworks."""
        (self.meta / "agent.json").unlink(missing_ok=True)
        (self.work_dir / "agent_id").unlink(missing_ok=True)
        shutil.rmtree(self.tasks_dir, ignore_errors=True)
        shutil.rmtree(self.frameworks_dir, ignore_errors=True)

    def save_framework(self, info: pb.FrameworkInfo) -> None:
        self.frameworks_dir.mkdir(parents=True, exist_ok=True)
        write_record(
            self.frameworks_dir / f"{framework_key(info.id)}.json",
            {"framework_id": info.id, "info": base64.b64encode(info.SerializeToString()).decode()},
        )

    def save_task(self, task: TaskCheckpoint) -> None:
        directory = self.tasks_dir / task.container_id
        directory.mkdir(parents=True, exist_ok=True)
        write_record(
            directory / "task.json",
            {
                "framework_id": task.framework_id,
                "info": base64.b64encode(task.info.SerializeToString()).decode(),
                "container_id": task.container_id,
                "sandbox": str(task.sandbox),
                "completed_at": task.completed_at,
            },
        )

    def log_path(self, container_id: str) -> Path:
        return self.tasks_dir / container_id / "updates.log"

    def complete_task(self, task: TaskCheckpoint, now: float) -> None:
        """Its terminal update was acknowledged: keep only what ``corral logs`` and GC need."""
        task.completed_at = now
        self.save_task(task)
        self.log_path(task.container_id).unlink(missing_ok=True)

    def remove_task(self, container_id: str) -> None:
        shutil.rmtree(self.tasks_dir / container_id, ignore_errors=True)

    # -- reading
    def load(self) -> AgentCheckpoint:
        """Everything checkpointed; raises CheckpointError naming the first damaged file."""
        out = AgentCheckpoint()
        agent = read_record(self.meta / "agent.json")
        if agent is not None:
            out.agent_id = _str(self.meta / "agent.json", agent, "agent_id")
            out.boot_id = _str(self.meta / "agent.json", agent, "boot_id")
        else:
            with contextlib.suppress(FileNotFoundError):
                out.agent_id = (self.work_dir / "agent_id").read_text().strip()  # before checkpoints
        if self.frameworks_dir.is_dir():
            for path in sorted(self.frameworks_dir.glob("*.json")):
                record = read_record(path)
                assert record is not None
                info = _proto(path, record, pb.FrameworkInfo)
                out.frameworks[info.id] = info
        if self.tasks_dir.is_dir():
            for directory in sorted(self.tasks_dir.iterdir()):
                task = self._load_task(directory)
                if task is not None:
                    out.tasks.append(task)
        return out

    def _load_task(self, directory: Path) -> TaskCheckpoint | None:
        path = directory / "task.json"
        record = read_record(path)
        if record is None:
            # The agent died between mkdir and the rename: never launched.
            shutil.rmtree(directory, ignore_errors=True)
            return None
        completed = record.get("completed_at")
        if completed is not None and not isinstance(completed, int | float):
            raise CheckpointError(path, "completed_at: not a number")
        task = TaskCheckpoint(
            framework_id=_str(path, record, "framework_id"),
            info=_proto(path, record, pb.TaskInfo),
            container_id=_str(path, record, "container_id"),
            sandbox=Path(_str(path, record, "sandbox")),
            completed_at=completed,
        )
        if task.container_id != directory.name:
            raise CheckpointError(path, f"container_id {task.container_id!r} is not its folder's name")
        if completed is None:
            task.updates = replay(directory / "updates.log")
        return task


def framework_key(framework_id: str) -> str:
    """A file name for a framework id (ids may hold any character)."""
    digest = hashlib.sha256(framework_id.encode()).hexdigest()[:12]
    return f"{_SAFE.sub('_', framework_id)[:60]}-{digest}"


def _str(path: Path, record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise CheckpointError(path, f"{key}: missing or not a string")
    return value


_M = TypeVar("_M", pb.TaskInfo, pb.FrameworkInfo)


def _proto(path: Path, record: dict[str, Any], kind: type[_M]) -> _M:
    try:
        return kind.FromString(base64.b64decode(_str(path, record, "info"), validate=True))
    except CheckpointError:
        raise
    except Exception:
        raise CheckpointError(path, f"info: not a {kind.__name__}") from None
