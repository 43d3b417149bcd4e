"""slave/task_status.py: how a container's end becomes the task's terminal update."""

from __future__ import annotations

import signal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.codec import is_terminal
from corral.proto import messages_pb2 as pb
from corral.slave import task_status
from corral.slave.containerizer import Limitation, Termination

TS = pb.TaskStatus


def ended(
    exit_code: int | None = 0,
    sig: int | None = None,
    limitation: Limitation | None = None,
    killed: bool = False,
) -> Termination:
    return Termination(exit_code, sig, limitation, killed, stderr_tail="last words")


OOM = Limitation("memory", "memory limit of 64 MiB reached (peak 64 MiB)", 64 << 20, 64 << 20)
PIDS = Limitation("pids", "the task hit its limit of 64 processes", 64, 64)
DISK = Limitation("disk", "the sandbox grew past 10 MiB", 10 << 20, 11 << 20)


@pytest.mark.parametrize(
    ("termination", "state", "reason", "message"),
    [
        (ended(0), pb.TASK_FINISHED, TS.REASON_COMMAND_EXITED, "command exited with status 0"),
        (ended(3), pb.TASK_FAILED, TS.REASON_COMMAND_EXITED, "command exited with status 3"),
        (
            ended(None, 9),
            pb.TASK_FAILED,
            TS.REASON_COMMAND_EXITED,
            "command was killed by signal 9 (SIGKILL)",
        ),
        (ended(None, 77), pb.TASK_FAILED, TS.REASON_COMMAND_EXITED, "command was killed by signal 77 (77)"),
        (ended(None, 9, OOM), pb.TASK_FAILED, TS.REASON_CONTAINER_LIMITATION_MEMORY, OOM.message),
        (ended(1, None, PIDS), pb.TASK_FAILED, TS.REASON_CONTAINER_LIMITATION_PIDS, PIDS.message),
        (ended(None, 9, DISK), pb.TASK_FAILED, TS.REASON_CONTAINER_LIMITATION_DISK, DISK.message),
        # It succeeded despite refused forks: FINISHED, with the limit said.
        (
            ended(0, None, PIDS),
            pb.TASK_FINISHED,
            TS.REASON_CONTAINER_LIMITATION_PIDS,
            f"command exited with status 0; {PIDS.message}",
        ),
        (ended(None, 15, killed=True), pb.TASK_KILLED, TS.REASON_TASK_KILLED_BY_REQUEST, "killed on request"),
    ],
)
def test_a_termination_maps_to_a_state_reason_and_sentence(
    termination: Termination, state: int, reason: int, message: str
) -> None:
    change = task_status.terminal(termination)
    assert (change.state, change.reason, change.message) == (state, reason, message)
    assert change.extra["stderr_tail"] == "last words"


def test_the_forensics_go_into_the_update() -> None:
    change = task_status.terminal(ended(None, 9, OOM))
    status = task_status.status("t1", "f1", "a1", change, now=12.5)
    assert (status.signal, status.limit, status.peak, status.stderr_tail) == (
        9,
        64 << 20,
        64 << 20,
        "last words",
    )
    assert not status.HasField("exit_code")
    assert (status.task_id, status.framework_id, status.agent_id, status.timestamp) == (
        "t1",
        "f1",
        "a1",
        12.5,
    )
    assert status.source == TS.SOURCE_AGENT


def test_what_the_cgroup_used_goes_into_the_terminal_update_when_it_was_measured() -> None:
    used = Termination(0, None, None, False, "", cpu_time_s=1.25, mem_peak_bytes=70 << 20)
    status = task_status.status("t1", "f1", "a1", task_status.terminal(used), now=1.0)
    assert (status.cpu_time_s, status.mem_peak_bytes) == (1.25, 70 << 20)
    unmeasured = task_status.status("t1", "f1", "a1", task_status.terminal(ended()), now=1.0)
    assert not unmeasured.HasField("cpu_time_s")
    assert not unmeasured.HasField("mem_peak_bytes")


def test_a_task_killed_for_its_health_says_so() -> None:
    reason = (TS.REASON_TASK_UNHEALTHY, "killed: health check failed 3 times in a row")
    change = task_status.terminal(ended(None, 15, killed=True), kill_reason=reason)
    assert (change.state, change.reason, change.message) == (pb.TASK_KILLED, *reason)


def test_a_recovered_task_that_was_being_killed_and_ended_meanwhile_is_killed() -> None:
    # Asked to stop, it stopped while no agent watched.
    change = task_status.terminal(ended(None, 15), recovered=True, state=pb.TASK_KILLING)
    assert (change.state, change.reason) == (pb.TASK_KILLED, TS.REASON_TASK_KILLED_BY_REQUEST)
    # Not re-attached, the same end is a failure by signal.
    assert task_status.terminal(ended(None, 15), state=pb.TASK_KILLING).state == pb.TASK_FAILED


def test_signal_names_follow_the_platform() -> None:
    assert task_status.signal_name(int(signal.SIGTERM)) == "SIGTERM"
    assert task_status.signal_name(6) == "SIGABRT"  # the canonical name, not the SIGIOT alias


limitations = st.none() | st.builds(
    Limitation,
    st.sampled_from(["memory", "pids", "disk", "gpu"]),
    st.text(min_size=1, max_size=20),
    st.integers(0, 1 << 40),
    st.integers(0, 1 << 40),
)
terminations = st.builds(
    Termination,
    st.none() | st.integers(-255, 255),
    st.none() | st.integers(1, 128),
    limitations,
    st.booleans(),
    st.text(max_size=30),
)
states = st.sampled_from([pb.TASK_STAGING, pb.TASK_STARTING, pb.TASK_RUNNING, pb.TASK_KILLING])
kill_reasons = st.none() | st.just((TS.REASON_TASK_UNHEALTHY, "killed: unhealthy"))


@given(terminations, st.booleans(), states, kill_reasons)
def test_every_termination_maps_to_a_terminal_state_with_a_reason_and_a_message(
    t: Termination, recovered: bool, state: int, kill_reason: tuple[int, str] | None
) -> None:
    change = task_status.terminal(t, recovered=recovered, state=state, kill_reason=kill_reason)  # type: ignore[arg-type]
    assert is_terminal(change.state)
    assert change.state in (pb.TASK_FINISHED, pb.TASK_FAILED, pb.TASK_KILLED)
    assert change.reason != TS.REASON_UNSPECIFIED
    assert change.message
    # FINISHED only for a clean exit; a limit hit always reports the limit.
    if change.state == pb.TASK_FINISHED:
        assert t.exit_code == 0
        assert not t.killed
    if t.limitation is not None:
        assert change.extra["limit"] == t.limitation.limit
    # It always builds a valid update.
    task_status.status("t", "f", "a", change, 1.0)


@given(st.text(max_size=40))
def test_lost_launch_failed_and_agent_errors_are_terminal_too(text: str) -> None:
    for change in (
        task_status.lost(text or "x"),
        task_status.launch_failed(text),
        task_status.agent_error(text),
    ):
        assert is_terminal(change.state)
        assert change.reason != TS.REASON_UNSPECIFIED
