"""The agent's checkpoints: what a restarted agent needs to carry on.

Under ``<work_dir>/meta/``:

    agent.json     agent id and the boot it was written in (a checksummed
                   record, written atomically and durably)
    journal.log    everything else, as events appended one a line,
                   ``<crc32 hex> <json>``: a framework's info, a task about to
                   be launched (TaskInfo, container id, sandbox), each status
                   update (before it is sent), each acknowledgement, a task
                   completed (its terminal update acknowledged), a task
                   forgotten (its sandbox collected)

Mesos keeps a file per task and per update stream; one journal costs one
``write(2)`` per event instead of creating, renaming and unlinking files per
task, which on this kind of disk cost more than the rest of the update path
(measured: 0.3-0.9 ms per open/rename/unlink, bench/agent_recovery.py). The
journal is compacted (rewritten from what is still live, then renamed over)
when it grows past four times its last compacted size.

A line cut short at the end (the host died mid-append; the event was never
acted upon) is dropped and cut off; any other damage is a
:class:`CheckpointError` naming the file and the record, and the agent refuses
to start rather than guess.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from corral.errors import CorralError
from corral.proto import messages_pb2 as pb

log = structlog.get_logger(__name__)


class CheckpointWriteError(CorralError):
    """A checkpoint could not be written (a full or failing disk). Nothing of the
    event reached the file: the journal still ends at its last whole event."""

    def __init__(self, path: Path, error: OSError) -> None:
        self.path = path
        self.error = error
        super().__init__(f"cannot write checkpoint {path}: {error.strerror or error}")


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
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _write_all(fd, blob)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointWriteError(path, e) from e
    if durable:
        try:
            _fsync_dir(path.parent)
        except OSError as e:
            raise CheckpointWriteError(path, e) from e


def _write_all(fd: int, data: bytes) -> None:
    """write(2) may write less than asked (a disk filling up): go on until all is written."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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


# -- the journal --------------------------------------------------------------------


def _encode_line(record: dict[str, Any]) -> bytes:
    body = _canonical(record)
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _b64(message: pb.TaskStatus | pb.TaskInfo | pb.FrameworkInfo) -> str:
    return base64.b64encode(message.SerializeToString()).decode()


@dataclass
class UpdateStream:
    """A task's status updates: the latest, and those not acknowledged yet (in order)."""

    pending: list[pb.TaskStatus] = field(default_factory=list)
    latest: pb.TaskStatus | None = None


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


@dataclass
class JournalState:
    """What the journal says (live frameworks and tasks), changed by typed
    events; no I/O. :class:`Checkpoints` keeps one to compact the journal;
    corral.sim keeps one as a simulated agent's checkpoint contents, so it
    recovers from what a real agent would read back."""

    frameworks: dict[str, pb.FrameworkInfo] = field(default_factory=dict)
    tasks: dict[str, TaskCheckpoint] = field(default_factory=dict)
    #: where the events come from, for the errors
    path: Path = field(default=Path("journal.log"))

    def framework(self, info: pb.FrameworkInfo) -> None:
        self.frameworks[info.id] = info

    def task(self, task: TaskCheckpoint) -> None:
        """A task about to be launched (a fresh record, no updates yet)."""
        self.tasks[task.container_id] = TaskCheckpoint(
            task.framework_id, task.info, task.container_id, task.sandbox
        )

    def forget(self, container_id: str) -> None:
        self.tasks.pop(container_id, None)

    def _known(self, container_id: str, op: str, number: int) -> TaskCheckpoint:
        task = self.tasks.get(container_id)
        if task is None:
            raise CheckpointError(self.path, f"record {number}: {op} of unknown container {container_id!r}")
        return task

    def update(self, container_id: str, status: pb.TaskStatus, acked: bool = False, number: int = 0) -> None:
        task = self._known(container_id, "update", number)
        task.updates.latest = status
        if not acked:
            task.updates.pending.append(status)

    def ack(self, container_id: str, uuid: bytes, number: int = 0) -> None:
        task = self._known(container_id, "ack", number)
        task.updates.pending = [u for u in task.updates.pending if u.uuid != uuid]

    def complete(self, container_id: str, at: float, number: int = 0) -> None:
        task = self._known(container_id, "complete", number)
        task.completed_at = at
        task.updates = UpdateStream()

    def checkpoint(self, agent_id: str = "", boot: str = "") -> AgentCheckpoint:
        """What a restarted agent reads back (copies: later events do not change it)."""
        tasks = [
            TaskCheckpoint(
                t.framework_id,
                t.info,
                t.container_id,
                t.sandbox,
                t.completed_at,
                UpdateStream(list(t.updates.pending), t.updates.latest),
            )
            for t in self.tasks.values()
        ]
        return AgentCheckpoint(agent_id, boot, dict(self.frameworks), tasks)

    def apply(self, path: Path, number: int, record: dict[str, Any]) -> None:
        """Apply one event as the journal holds it; raises CheckpointError if it makes no sense."""
        op = record.get("op")
        self.path = path
        try:
            if op == "framework":
                self.framework(pb.FrameworkInfo.FromString(base64.b64decode(record["info"], validate=True)))
                return
            container_id = record["container_id"]
            if not isinstance(container_id, str):
                raise TypeError
            if op == "task":
                info = pb.TaskInfo.FromString(base64.b64decode(record["info"], validate=True))
                sandbox = Path(str(record["sandbox"]))
                self.task(TaskCheckpoint(str(record["framework_id"]), info, container_id, sandbox))
            elif op == "forget":
                self.forget(container_id)
            elif op == "update":
                status = pb.TaskStatus.FromString(base64.b64decode(record["status"], validate=True))
                self.update(container_id, status, bool(record.get("acked", False)), number)
            elif op == "ack":
                self.ack(container_id, bytes.fromhex(record["uuid"]), number)
            elif op == "complete":
                at = record["at"]
                if not isinstance(at, int | float):
                    raise TypeError
                self.complete(container_id, float(at), number)
            else:
                self._known(container_id, str(op), number)
                raise CheckpointError(path, f"record {number}: unknown event {op!r}")
        except CheckpointError:
            raise
        except Exception:
            raise CheckpointError(path, f"record {number}: a malformed {op!r} event") from None

    def records(self) -> list[dict[str, Any]]:
        """Events that rebuild this state (for compaction)."""
        out: list[dict[str, Any]] = [{"op": "framework", "info": _b64(i)} for i in self.frameworks.values()]
        for t in self.tasks.values():
            out.append(_task_record(t))
            if t.completed_at is not None:
                out.append({"op": "complete", "container_id": t.container_id, "at": t.completed_at})
                continue
            pending = {u.uuid for u in t.updates.pending}
            latest = t.updates.latest
            if latest is not None and latest.uuid not in pending:
                done = {"op": "update", "container_id": t.container_id, "status": _b64(latest), "acked": True}
                out.append(done)
            for u in t.updates.pending:
                out.append({"op": "update", "container_id": t.container_id, "status": _b64(u)})
        return out


def _task_record(t: TaskCheckpoint) -> dict[str, Any]:
    return {
        "op": "task",
        "framework_id": t.framework_id,
        "container_id": t.container_id,
        "sandbox": str(t.sandbox),
        "info": _b64(t.info),
    }


def replay(path: Path) -> JournalState:
    """Read a journal; a line cut short at the end is cut off the file."""
    state = JournalState()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return state
    except OSError as e:
        raise CheckpointError(path, f"cannot be read ({e.strerror})") from e
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    for number, line in enumerate(lines, 1):
        state.apply(path, number, _decode_line(path, number, line))
    if tail:
        with open(path, "r+b") as f:
            f.truncate(len(raw) - len(tail))
    return state


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
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise CheckpointError(path, f"record {number}: not an event")
    return record


class Checkpoints:
    """Reads and writes the checkpoints of one agent's work directory.

    Journal writes skip fsync: they must outlive the agent process, not the
    host (a reboot ends every container anyway, see docs/architecture.md,
    Agent). The agent id is written durably. Not thread-safe: call from the
    agent's loop.
    """

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.meta = work_dir / "meta"
        self.journal = self.meta / "journal.log"
        self._state = JournalState()
        self._fd = -1
        #: the journal's length up to its last whole event; None: take the file's
        self._size: int | None = None
        self._compact_at = COMPACT_MIN_BYTES

    # -- writing
    def save_agent(self, agent_id: str) -> None:
        """Durably; raises CheckpointWriteError."""
        path = self.meta / "agent.json"
        try:
            self.meta.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointWriteError(path, e) from e
        write_record(path, {"agent_id": agent_id, "boot_id": boot_id()}, durable=True)

    def forget_agent(self) -> None:
        """Start over as a new agent: no id, no tasks, no frameworks."""
        self.close()
        (self.meta / "agent.json").unlink(missing_ok=True)
        (self.work_dir / "agent_id").unlink(missing_ok=True)
        self.journal.unlink(missing_ok=True)
        self._state = JournalState()
        self._size = None

    def save_framework(self, info: pb.FrameworkInfo) -> None:
        self._append({"op": "framework", "info": _b64(info)})

    def save_task(self, task: TaskCheckpoint) -> None:
        """Before the task is launched."""
        self._append(_task_record(task))

    def record_update(self, container_id: str, status: pb.TaskStatus) -> None:
        """Before the update can be sent."""
        self._append({"op": "update", "container_id": container_id, "status": _b64(status)})

    def record_ack(self, container_id: str, uuid: bytes) -> None:
        """Before the next update goes."""
        self._append({"op": "ack", "container_id": container_id, "uuid": uuid.hex()})

    def complete_task(self, container_id: str, now: float) -> None:
        """Its terminal update was acknowledged: keep only what ``corral logs`` and GC need."""
        self._append({"op": "complete", "container_id": container_id, "at": now})

    def remove_task(self, container_id: str) -> None:
        self._append({"op": "forget", "container_id": container_id})

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _append(self, record: dict[str, Any]) -> None:
        """Append one event, all or nothing: on any failure the file is cut back
        to its last whole event, the in-memory state is unchanged and
        CheckpointWriteError says why (a full disk must not leave half a line
        that the next event would bury inside the journal, where replay refuses it)."""
        line = _encode_line(record)
        fd, start = self._open()
        try:
            _write_all(fd, line)
        except OSError as e:
            self._cut_back(start)
            raise CheckpointWriteError(self.journal, e) from e
        try:
            self._state.apply(self.journal, 0, record)
        except CheckpointError:
            self._cut_back(start)  # an event that makes no sense is not kept
            raise
        self._size = start + len(line)
        if self._size >= self._compact_at:
            try:
                self.compact()
            except OSError as e:
                # The journal as it is stays valid; try again when it has grown.
                self._compact_at = 2 * self._size
                log.warning("checkpoints.compact_failed", path=str(self.journal), error=str(e))

    def _open(self) -> tuple[int, int]:
        """The journal's fd (opened for appending) and its length up to the last whole event."""
        if self._fd < 0:
            try:
                self.meta.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise CheckpointWriteError(self.journal, e) from e
            self._fd = fd
            size = os.fstat(fd).st_size
            if self._size is None:
                self._size = size
            elif size > self._size:
                self._cut_back(self._size)  # an earlier failed write's tail could not be cut then
                if self._fd < 0:
                    raise CheckpointWriteError(self.journal, OSError(0, "cannot cut off a failed write"))
        assert self._size is not None
        return self._fd, self._size

    def _cut_back(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError as e:
            # Keep the known length: the next open cuts the tail before appending.
            log.error("checkpoints.truncate_failed", path=str(self.journal), error=str(e))
            self.close()

    def compact(self) -> None:
        """Rewrite the journal from what is still live (atomically: write, rename).
        Raises OSError if it cannot (the journal is then left as it was)."""
        self.close()
        self.meta.mkdir(parents=True, exist_ok=True)
        body = b"".join(_encode_line(r) for r in self._state.records())
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, body)
            finally:
                os.close(fd)
            os.rename(tmp, self.journal)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        self._size = len(body)
        self._compact_at = max(COMPACT_MIN_BYTES, 4 * len(body))

    # -- reading
    def load(self) -> AgentCheckpoint:
        """Everything checkpointed; raises CheckpointError naming a damaged file.
        Compacts the journal, so later appends start from a clean file."""
        agent_id = boot = ""
        agent = read_record(self.meta / "agent.json")
        if agent is not None:
            agent_id = _str(self.meta / "agent.json", agent, "agent_id")
            boot = _str(self.meta / "agent.json", agent, "boot_id")
        else:
            with contextlib.suppress(FileNotFoundError):
                agent_id = (self.work_dir / "agent_id").read_text().strip()  # before checkpoints
        self.close()
        self._state = replay(self.journal)
        self._size = None
        if self.journal.exists():
            try:
                self.compact()
            except OSError as e:
                # Appending to the journal as it is works as well (a full disk).
                log.warning("checkpoints.compact_failed", path=str(self.journal), error=str(e))
        return self._state.checkpoint(agent_id, boot)


#: Below this the journal is never compacted.
COMPACT_MIN_BYTES = 1 << 20


def _str(path: Path, record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise CheckpointError(path, f"{key}: missing or not a string")
    return value
