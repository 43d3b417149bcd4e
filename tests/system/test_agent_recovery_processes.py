"""Agent recovery with real processes: `corral master` and `corral agent` run as
their own processes; the agent is killed with SIGKILL while its tasks run, end
and are being killed, then started again. Nothing is restarted and every final
state reaches the framework."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.frameworks import SchedulerDriver, Task, TaskState
from corral.resources import Resources
from corral.testing import RecordingScheduler, corral_command, eventually, framework, listening, terminate
from corral.testing_zookeeper import free_port

pytestmark = [pytest.mark.root, pytest.mark.slow]

ORDER = [
    TaskState.STAGING,
    TaskState.STARTING,
    TaskState.RUNNING,
    TaskState.KILLING,
]


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    try:
        yield procs
    finally:
        terminate(procs)
        left = remove_cgroups(PREFIX)
        reap_adopted_supervisors()
    # The last agent (a recovered one too) removed its cgroups and their prefix.
    assert not left, f"cgroups left behind: {left}"


ADOPTABLE = {b"corral-super", b"corral-forksrv", b"corral-init"}


def reap_adopted_supervisors(timeout_s: float = 10.0) -> None:
    """Supervisors and fork servers orphaned by a killed agent go to the nearest subreaper, which is
    this process if an in-process containerizer made it one (earlier tests): reap
    them, so they are not left as zombies for later tests to find."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                raw = stat.read_bytes()
                comm = raw[raw.find(b"(") + 1 : raw.rfind(b")")]
                fields = raw[raw.rfind(b")") + 2 :].split()
                if comm in ADOPTABLE and int(fields[1]) == os.getpid():
                    children.append((int(stat.parent.name), fields[0]))
        for pid, state in children:
            if state == b"Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
        if not children:
            return
        time.sleep(0.05)


def remove_cgroups(prefix: str) -> list[Path]:
    """Kill and remove whatever is left under ``prefix`` (a test that failed half way)."""
    left = list(Path("/sys/fs/cgroup").glob(f"*/{prefix}"))
    for _ in range(50):
        dirs = sorted((d for root in left for d in [root, *root.rglob("*")] if d.is_dir()), reverse=True)
        if not dirs:
            break
        for d in dirs:
            with contextlib.suppress(OSError, ValueError):
                for pid in (d / "cgroup.procs").read_text().split():
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(OSError):
                d.rmdir()
        time.sleep(0.05)
    return left


PREFIX = f"corral-test-{os.getpid()}-recovery"


def spawn(procs: list[subprocess.Popen[bytes]], log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CORRAL_LOG_LEVEL": "info"}
    with log.open("ab") as out:
        p = subprocess.Popen([*corral_command(), *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    procs.append(p)
    return p


def agent_args(address: str, work_dir: Path, *extra: str) -> list[str]:
    return [
        "agent",
        "--master",
        address,
        "--work-dir",
        str(work_dir),
        "--hostname",
        "recovering",
        "--resources",
        "cpus:60;mem:8192",
        "--cgroup-prefix",
        PREFIX,
        *extra,
    ]


def containers(work_dir: Path) -> dict[str, dict[str, object]]:
    """container.json of every container, by task id (container ids are ``<task>-<hex>``)."""
    out = {}
    for path in (work_dir / "containers").glob("*/container.json"):
        record = json.loads(path.read_text())
        out[path.parent.name.rsplit("-", 1)[0]] = record
    return out


def sandbox(work_dir: Path, task_id: str) -> Path:
    (found,) = (work_dir / "sandboxes").glob(f"*/{task_id}-*")
    return found


async def launch_first(driver: SchedulerDriver, rec: RecordingScheduler, tasks: list[Task]) -> None:
    driver.launch(await rec.next_offer(timeout=30), tasks)


def alive(pid: object) -> bool:
    """Running (a zombie is not: it only waits for whoever adopted it to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] != b"Z"


def exists(path: str) -> bool:
    return Path(path).exists()


def check_not_restarted(
    work_dir: Path, before: dict[str, dict[str, object]], running: list[str], started: list[str]
) -> None:
    """Re-attached, not restarted: same live pids, and every command started once."""
    after = containers(work_dir)
    for t in running:
        assert after[t]["task_pid"] == before[t]["task_pid"], t
        assert after[t]["supervisor_pid"] == before[t]["supervisor_pid"], t
        assert alive(after[t]["task_pid"]), t
    for t in started:
        assert (sandbox(work_dir, t) / "starts").read_text() == "started\n", t


def check_delivery(rec: RecordingScheduler, task_id: str) -> list[TaskState]:
    """Every update with a uuid, deduplicated by uuid: in order, exactly one terminal."""
    seen: set[bytes] = set()
    states = []
    for u in rec.updates:
        if u.task_id == task_id and u.uuid and u.uuid not in seen:
            seen.add(u.uuid)
            states.append(u.state)
    terminal = [s for s in states if s.is_terminal]
    assert len(terminal) == 1, f"{task_id}: {states}"
    assert states[-1].is_terminal, f"{task_id}: {states}"
    ranks = [ORDER.index(s) for s in states[:-1]]
    assert ranks == sorted(ranks), f"{task_id}: out of order {states}"
    return states


async def test_kill_9_of_the_agent_with_50_tasks_in_mixed_states(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    spawn(processes, tmp_path / "master.log", "master", "--listen", address)
    await listening(address)
    work_dir = tmp_path / "agent"
    agent = spawn(processes, tmp_path / "agent.log", *agent_args(address, work_dir))
    small = Resources.of(cpus=0.1, mem=16)
    running = [f"run-{i}" for i in range(20)]
    finishing = [f"fin-{i}" for i in range(15)]
    killing = [f"kill-{i}" for i in range(15)]
    tasks = [Task(t, "echo started >> starts; exec sleep 600", small) for t in running]
    tasks += [
        Task(t, f"echo started >> starts; while [ ! -e go ]; do sleep 0.05; done; exit {3 * (i % 2)}", small)
        for i, t in enumerate(finishing)
    ]
    # Half stop after SIGTERM once told to (while no agent watches), half ignore
    # it and need the restarted agent's SIGKILL after the grace period.
    tasks += [
        Task(
            t,
            # The first half, once asked, ignore further SIGTERMs (the agent
            # signals new processes again) and end when told, i.e. while no agent runs.
            (
                'trap \'trap "" TERM; echo > got-term; '
                "while [ ! -e go ]; do sleep 0.05; done; exit 0' TERM; "
                if i < 8
                else "trap '' TERM; "
            )
            + "echo started >> starts; while :; do sleep 0.1; done",
            small,
            # The first half must not reach SIGKILL before the agent dies (it
            # would freeze their cgroup for the kill; see Containerizer.recover).
            kill_grace_s=60 if i < 8 else 2,
        )
        for i, t in enumerate(killing)
    ]
    async with framework(address, failover_timeout_s=120) as (driver, rec):
        offer = await rec.next_offer(timeout=30)
        driver.launch(offer, tasks)
        await rec.wait_for(
            lambda: all((s := rec.latest(t.task_id)) and s.state is TaskState.RUNNING for t in tasks),
            60,
            "every task RUNNING",
        )
        await eventually(
            lambda: all((sandbox(work_dir, t.task_id) / "starts").exists() for t in tasks),
            20,
            "every task to have started its command (and set its traps)",
        )
        before = containers(work_dir)
        assert len(before) == 50
        for t in killing:
            driver.kill(t)
        await rec.wait_for(
            lambda: all((s := rec.latest(t)) and s.state is TaskState.KILLING for t in killing),
            20,
            "KILLING of the tasks being killed",
        )
        # KILLING goes out before the signal: wait until the first half has it.
        await eventually(
            lambda: all((sandbox(work_dir, t) / "got-term").exists() for t in killing[:8]),
            20,
            "SIGTERM to reach the tasks being killed",
        )

        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        for t in finishing + killing[:8]:
            (sandbox(work_dir, t) / "go").touch()
        status_files = [
            work_dir / "containers" / sandbox(work_dir, t).name / "exit_status.json"
            for t in finishing + killing[:8]
        ]
        try:
            await eventually(lambda: all(p.exists() for p in status_files), 30, "tasks to end")
        except AssertionError:
            missing = [p.parent.name for p in status_files if not p.exists()]
            raise AssertionError(f"no exit status while the agent was down: {missing}") from None

        spawn(processes, tmp_path / "agent.log", *agent_args(address, work_dir))
        await rec.wait_for(
            lambda: all((s := rec.latest(t)) and s.state.is_terminal for t in finishing + killing),
            40,
            "the final state of every task that ended",
        )
        for i, t in enumerate(finishing):
            states = check_delivery(rec, t)
            assert states[-1] is (TaskState.FAILED if i % 2 else TaskState.FINISHED), (t, states)
        for t in killing:
            assert check_delivery(rec, t)[-1] is TaskState.KILLED, t
        # The running tasks were re-attached, not restarted: same pids, one start each.
        check_not_restarted(work_dir, before, running, [t.task_id for t in tasks])
        for t in running:
            assert rec.latest(t).state is TaskState.RUNNING  # type: ignore[union-attr]
        # Still under control after the restart.
        driver.kill(running[0])
        assert (await rec.wait_terminal(running[0])).state is TaskState.KILLED


async def test_a_corrupt_checkpoint_is_refused_and_cleanup_kills_the_leftovers(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    spawn(processes, tmp_path / "master.log", "master", "--listen", address)
    await listening(address)
    work_dir = tmp_path / "agent"
    agent = spawn(processes, tmp_path / "agent.log", *agent_args(address, work_dir))
    async with framework(address, failover_timeout_s=120) as (driver, rec):
        offer = await rec.next_offer(timeout=30)
        driver.launch(offer, [Task("victim", "exec sleep 600", Resources.of(cpus=0.1, mem=16))])
        await rec.wait_state("victim", TaskState.RUNNING)
        (record,) = containers(work_dir).values()
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)

        log = work_dir / "meta" / "journal.log"
        data = bytearray(log.read_bytes())
        data[12] ^= 0x20  # inside the first record, not its end
        log.write_bytes(bytes(data))
        refused = await asyncio.to_thread(
            subprocess.run,
            [*corral_command(), *agent_args(address, work_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert refused.returncode != 0
        message = " ".join(refused.stderr.split())
        assert str(log) in message, refused.stderr
        assert "record 1: checksum mismatch" in message
        assert "--recover=cleanup" in message
        assert alive(record["task_pid"])  # it guessed nothing, killed nothing

        spawn(processes, tmp_path / "agent.log", *agent_args(address, work_dir, "--recover=cleanup"))
        status = await rec.wait_terminal("victim", timeout=30)
        assert status.state is TaskState.LOST
        assert status.reason == "AGENT_RESTARTED"
        await eventually(lambda: not alive(record["task_pid"]), 10, "the leftover task to be killed")
        assert not list((work_dir / "containers").iterdir())
        assert not any(map(exists, record["cgroups"]))  # type: ignore[call-overload]


async def test_a_stopped_agent_goes_unreachable_then_running_again(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """SIGSTOP freezes the agent (its tasks run on): the master hears nothing past
    its heartbeat timeout, marks it unreachable, and the frameworks learn it;
    SIGCONT heals the partition."""
    address = f"127.0.0.1:{free_port()}"
    spawn(
        processes,
        tmp_path / "master.log",
        "master",
        "--listen",
        address,
        "--agent-heartbeat-interval",
        "0.5",
        "--agent-heartbeat-misses",
        "4",
        "--agent-unreachable-fraction",
        "1",
    )
    await listening(address)
    work_dir = tmp_path / "agent"
    agent = spawn(processes, tmp_path / "agent.log", *agent_args(address, work_dir))
    small = Resources.of(cpus=0.1, mem=16)
    async with (
        framework(address, name="aware", failover_timeout_s=60) as (aware, rec),
        framework(address, name="unaware", failover_timeout_s=60, partition_aware=False) as (unaware, old),
    ):
        # Either may be offered the whole agent first; the other gets what is left.
        await asyncio.gather(
            launch_first(aware, rec, [Task(f"a{i}", "exec sleep 600", small) for i in range(3)]),
            launch_first(unaware, old, [Task("u0", "exec sleep 600", small)]),
        )
        for i in range(3):
            await rec.wait_state(f"a{i}", TaskState.RUNNING)
        await old.wait_state("u0", TaskState.RUNNING)
        before = containers(work_dir)

        agent.send_signal(signal.SIGSTOP)
        try:
            for i in range(3):
                status = await rec.wait_state(f"a{i}", TaskState.UNREACHABLE, timeout=15)
                assert "stopped answering" in status.message
            await old.wait_state("u0", TaskState.LOST, timeout=15)
        finally:
            agent.send_signal(signal.SIGCONT)
        for i in range(3):
            await rec.wait_for(
                lambda i=i: rec.latest(f"a{i}").state is TaskState.RUNNING,  # type: ignore[misc, union-attr]
                20,
                f"a{i} RUNNING again",
            )
        # Told LOST, the unaware framework may have replaced it: it is killed
        # (Mesos does the same) without another terminal update (LOST was one).
        old_pid = before["u0"]["task_pid"]
        await eventually(lambda: not alive(old_pid), 20, "the lost u0 to be killed")
        assert [u.state for u in old.updates if u.task_id == "u0"][-1] is TaskState.LOST
        check_not_restarted(work_dir, before, [f"a{i}" for i in range(3)], [])

        # Its id is free again: the framework launches a new u0. Until the old
        # one's end has reached the master, a launch there is refused, naming why.
        def u0_states() -> list[TaskState]:
            return [u.state for u in old.updates if u.task_id == "u0"]

        for _ in range(40):
            seen = len(u0_states())
            await launch_first(unaware, old, [Task("u0", "exec sleep 600", small)])
            await old.wait_for(lambda seen=seen: len(u0_states()) > seen, 20, "an answer to the new u0")
            latest = old.latest("u0")
            assert latest is not None
            if latest.state is not TaskState.ERROR:
                break
            assert "still being killed" in latest.message, latest
            await asyncio.sleep(0.25)
        await old.wait_for(lambda: u0_states().count(TaskState.RUNNING) == 2, 20, "the new u0 RUNNING")


async def test_no_update_is_lost_across_a_master_restart(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Tasks end while the master is down (kill -9): their final updates wait in
    the agent's checkpointed queue and reach the framework through the new master."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    master = spawn(processes, tmp_path / "master.log", "master", "--listen", address)
    await listening(address)
    work_dir = tmp_path / "agent"
    spawn(processes, tmp_path / "agent.log", *agent_args(address, work_dir))
    small = Resources.of(cpus=0.1, mem=16)
    names = [f"t{i}" for i in range(10)]
    async with framework(address, failover_timeout_s=120) as (driver, rec):
        driver.launch(
            await rec.next_offer(timeout=30),
            [Task(t, "while [ ! -e go ]; do sleep 0.05; done; exit 0", small) for t in names],
        )
        await rec.wait_for(
            lambda: all((s := rec.latest(t)) and s.state is TaskState.RUNNING for t in names), 30, "RUNNING"
        )
        master.send_signal(signal.SIGKILL)
        master.wait(10)
        for t in names:
            (sandbox(work_dir, t) / "go").touch()
        await eventually(
            lambda: all(
                (work_dir / "containers" / sandbox(work_dir, t).name).exists() is False for t in names
            ),
            20,
            "the tasks to end and be cleaned up while no master runs",
        )
        spawn(processes, tmp_path / "master.log", "master", "--listen", address)
        await listening(address)
        # The agent's own update (with its uuid), not just the new master's
        # answer to the driver's reconciliation, which can come first.
        await rec.wait_for(
            lambda: all(
                any(u.task_id == t and u.uuid and u.state is TaskState.FINISHED for u in rec.updates)
                for t in names
            ),
            40,
            "every agent's FINISHED (with its uuid) through the new master",
        )
        for t in names:
            assert check_delivery(rec, t)[-1] is TaskState.FINISHED
