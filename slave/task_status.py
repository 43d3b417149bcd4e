"""How a task's end becomes its terminal status. Pure.

:func:`terminal` maps a container's :class:`Termination` (with what the agent
knows of the task: re-attached after a restart, being killed, killed by the
agent itself for a failed health check) to a terminal state, a reason and a
sentence for the user, plus the forensics that go into the update (exit
code, signal, stderr tail, the limit hit and the peak). Every termination
maps to a terminal state with a reason other than REASON_UNSPECIFIED
(tests/unit/test_task_status.py checks it over generated terminations).

:func:`status` builds the TaskStatus an agent sends; the time is passed in.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.codec import Reason, State
from corral.proto import messages_pb2 as pb
from corral.slave.containerizer import Termination

TS = pb.TaskStatus

_LIMITATION_REASONS: Mapping[str, Reason] = {
    "memory": TS.REASON_CONTAINER_LIMITATION_MEMORY,
    "pids": TS.REASON_CONTAINER_LIMITATION_PIDS,
    "disk": TS.REASON_CONTAINER_LIMITATION_DISK,
}
_SIGNALS = {s.value: s.name for s in signal.Signals}


@dataclass(frozen=True)
class Change:
    """A status to report: state, reason, message and the update's extra fields."""

    state: State
    reason: Reason = TS.REASON_UNSPECIFIED
    message: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; the number itself for one Python does not name."""
    return _SIGNALS.get(number, str(number))


def terminal(
    t: Termination,
    *,
    recovered: bool = False,
    state: State = pb.TASK_RUNNING,
    kill_reason: tuple[Reason, str] | None = None,
) -> Change:
    """The terminal update of a task that ended as ``t`` while in ``state``.

    ``recovered``: re-attached after an agent restart (then a task that was
    KILLING when the agent went down and ended meanwhile is KILLED: asked to
    stop, it stopped while no agent watched). ``kill_reason``: why the agent
    itself killed it, which replaces "killed on request".
    """
    extra: dict[str, object] = {"stderr_tail": t.stderr_tail}
    if t.cpu_time_s is not None:
        extra["cpu_time_s"] = t.cpu_time_s
    if t.mem_peak_bytes is not None:
        extra["mem_peak_bytes"] = t.mem_peak_bytes
    if t.exit_code is not None:
        extra["exit_code"] = t.exit_code
    if t.signal is not None:
        extra["signal"] = t.signal
    lim = t.limitation
    if lim is not None and lim.kind == "pids" and t.exit_code == 0 and not t.killed:
        # It succeeded despite refused forks: FINISHED, but with the limit said.
        extra.update(limit=lim.limit, peak=lim.peak)
        message = f"command exited with status 0; {lim.message}"
        return Change(pb.TASK_FINISHED, TS.REASON_CONTAINER_LIMITATION_PIDS, message, extra)
    if lim is not None:
        extra.update(limit=lim.limit, peak=lim.peak)
        reason = _LIMITATION_REASONS.get(lim.kind, TS.REASON_COMMAND_EXITED)
        return Change(pb.TASK_FAILED, reason, lim.message, extra)
    if t.killed or (recovered and state == pb.TASK_KILLING):
        reason, message = kill_reason or (TS.REASON_TASK_KILLED_BY_REQUEST, "killed on request")
        return Change(pb.TASK_KILLED, reason, message, extra)
    if t.exit_code == 0:
        return Change(pb.TASK_FINISHED, TS.REASON_COMMAND_EXITED, "command exited with status 0", extra)
    if t.signal is not None:
        message = f"command was killed by signal {t.signal} ({signal_name(t.signal)})"
        return Change(pb.TASK_FAILED, TS.REASON_COMMAND_EXITED, message, extra)
    return Change(
        pb.TASK_FAILED, TS.REASON_COMMAND_EXITED, f"command exited with status {t.exit_code}", extra
    )


def lost(message: str) -> Change:
    """A re-attached task whose end cannot be known."""
    return Change(pb.TASK_LOST, TS.REASON_AGENT_RESTARTED, message)


def launch_failed(error: str) -> Change:
    """A container that could not be started."""
    return Change(
        pb.TASK_FAILED, TS.REASON_CONTAINER_LAUNCH_FAILED, f"could not start the container: {error}"
    )


def agent_error(error: str) -> Change:
    """The agent itself failed while running the task (a bug, logged with its traceback)."""
    return Change(pb.TASK_FAILED, TS.REASON_CONTAINER_LAUNCH_FAILED, f"agent error: {error}")


def status(task_id: str, framework_id: str, agent_id: str, change: Change, now: float) -> pb.TaskStatus:
    """The TaskStatus an agent sends for ``change`` at time ``now``."""
    return pb.TaskStatus(
        task_id=task_id,
        state=change.state,
        reason=change.reason,
        message=change.message,
        source=pb.TaskStatus.SOURCE_AGENT,
        agent_id=agent_id,
        framework_id=framework_id,
        timestamp=now,
        **change.extra,  # type: ignore[arg-type]
    )
