"""The fork server: supervisors are forked by a small helper process, not the agent (root)."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog

from corral.slave.containerizer import ContainerConfig, Containerizer
from corral.slave.containerizer.cgroups.probe import probe

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups"),
]
Make = Callable[..., ContainerConfig]
_PR_SET_CHILD_SUBREAPER = 36


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of ``pid``, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def _ppid(pid: int) -> int:
    stat = _stat(pid)
    assert stat is not None, f"pid {pid} is gone"
    return stat[1]


def _is_zombie_or_gone(pid: int) -> bool:
    stat = _stat(pid)
    return stat is None or stat[0] == "Z"


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _read(path: str) -> str:
    return Path(path).read_text()


def _reap(pid: int) -> None:
    """Reap ``pid``, a zombie child of ours by now."""
    os.waitpid(pid, 0)


def zombies_of(*parents: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[0] == "Z" and stat[1] in parents:
                found.append(int(entry.name))
    return found


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == parent:
                found.append(int(entry.name))
    return found


async def poll(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(0.01)


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphaned supervisors come to this process instead of pid 1 (which here does not reap)."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    assert prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


async def run(ctz: Containerizer, config: ContainerConfig) -> int | None:
    await ctz.launch(config)
    termination = await asyncio.wait_for(ctz.wait(config.container_id), 30)
    await ctz.destroy(config.container_id)
    return termination.exit_code


async def test_supervisors_are_children_of_a_small_fork_server(ctz: Containerizer, make_config: Make) -> None:
    assert ctz.fork_server_pid is None  # started lazily
    config = make_config("/bin/sleep", "100")
    task_pid = await ctz.launch(config)
    server = ctz.fork_server_pid
    assert server is not None
    assert _stat(server) == ("S", os.getpid())
    supervisor = json.loads(
        (ctz.work_dir / "containers" / config.container_id / "container.json").read_text()
    )["supervisor_pid"]
    assert _ppid(supervisor) == server
    assert _ppid(task_pid) == supervisor
    status = dict(line.split(":", 1) for line in _read(f"/proc/{server}/status").splitlines())
    rss_kb = int(status["VmRSS"].split()[0])
    assert rss_kb < 20 * 1024, f"fork server RSS {rss_kb} kB"
    assert status["Threads"].strip() == "1"
    # A fresh interpreter without site-packages: no corral, grpc or structlog.
    cmdline = _read(f"/proc/{server}/cmdline").split("\0")
    assert "-S" in cmdline
    assert cmdline[3].endswith("forkserver.py")
    maps = _read(f"/proc/{server}/maps")
    assert "grpc" not in maps
    assert "site-packages" not in maps


async def test_fork_server_restarts_after_being_killed(ctz: Containerizer, make_config: Make) -> None:
    assert await run(ctz, make_config("/bin/true")) == 0
    first = ctz.fork_server_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await poll(lambda: not alive(first), "fork server death")
    with structlog.testing.capture_logs() as logs:
        assert await run(ctz, make_config("/bin/true")) == 0
    second = ctz.fork_server_pid
    assert second not in (None, first)
    assert _stat(first) is None  # the dead one was reaped
    assert {"forkserver.restarting", "forkserver.lost"} & {e["event"] for e in logs}
    assert all(e["log_level"] == "warning" for e in logs if e["event"].startswith("forkserver.lost"))


def _wait_dead_without_yielding(pid: int) -> None:
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.001)


async def test_launch_right_after_a_kill_restarts_the_server(ctz: Containerizer, make_config: Make) -> None:
    """No event loop turn between the kill and the launch, so the EOF is not seen yet."""
    assert await run(ctz, make_config("/bin/true")) == 0
    first = ctz.fork_server_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    _wait_dead_without_yielding(first)
    assert await run(ctz, make_config("/bin/true")) == 0
    assert ctz.fork_server_pid not in (None, first)


async def test_task_survives_the_fork_server_being_killed(
    ctz: Containerizer, make_config: Make, subreaper: None
) -> None:
    config = make_config("/bin/sleep", "1000")
    task_pid = await ctz.launch(config)
    meta = ctz.work_dir / "containers" / config.container_id
    supervisor = json.loads((meta / "container.json").read_text())["supervisor_pid"]
    server = ctz.fork_server_pid
    assert server is not None
    os.kill(server, signal.SIGKILL)
    await poll(lambda: not alive(server), "fork server death")
    await asyncio.sleep(0.1)
    assert alive(task_pid)
    assert alive(supervisor)
    # The containerizer still watches it through the pipes and pidfd it got.
    await ctz.kill(config.container_id, grace_s=10.0)
    termination = await ctz.wait(config.container_id)
    assert (termination.killed, termination.signal) == (True, signal.SIGTERM)
    assert json.loads((meta / "exit_status.json").read_text())["signal"] == signal.SIGTERM
    await ctz.destroy(config.container_id)
    # Re-parented to us (the subreaper), the supervisor was reaped through its pidfd.
    await poll(lambda: _stat(supervisor) is None, "supervisor reaped")
    assert await run(ctz, make_config("/bin/true")) == 0


_AGENT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path
    from corral.slave.containerizer import ContainerConfig, Containerizer

    async def main():
        work, prefix = Path(sys.argv[1]), sys.argv[2]
        ctz = Containerizer(work / "work", cgroup_prefix=prefix)
        config = ContainerConfig(
            container_id="survivor", argv=("/bin/sleep", "1000"), env={},
            sandbox=work / "sandbox", cpus_milli=100, mem_bytes=64 << 20,
        )
        pid = await ctz.launch(config)
        print("STARTED", json.dumps({"task": pid, "server": ctz.fork_server_pid}), flush=True)
        await asyncio.sleep(1000)

    asyncio.run(main())
    """
)


def _start_agent(work: Path, prefix: str) -> tuple[subprocess.Popen[str], dict[str, int]]:
    """A process with a containerizer that has launched one ``sleep``; its pids."""
    agent = subprocess.Popen(
        [sys.executable, "-c", _AGENT, str(work), prefix],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert agent.stdout is not None
    for line in agent.stdout:  # structlog's console lines come first
        if line.startswith("STARTED "):
            return agent, json.loads(line.split(" ", 1)[1])
    agent.wait(10)
    pytest.fail(f"the agent exited with {agent.returncode} before launching")


def _stop(agent: subprocess.Popen[str]) -> None:
    agent.kill()
    agent.wait(10)


async def test_task_survives_the_agent_being_killed(tmp_path: Path, subreaper: None) -> None:
    prefix = f"corral-test-{uuid.uuid4()}"
    agent, started = _start_agent(tmp_path, prefix)
    task, server = started["task"], started["server"]
    meta = tmp_path / "work" / "containers" / "survivor"
    supervisor = json.loads((meta / "container.json").read_text())["supervisor_pid"]
    backend = probe()
    try:
        _stop(agent)
        # The fork server sees EOF and leaves; it was re-parented to us, so we reap it.
        await poll(lambda: _is_zombie_or_gone(server), "fork server exit")
        _reap(server)
        assert alive(task)
        assert alive(supervisor)
        assert not (meta / "exit_status.json").exists()
        os.kill(task, signal.SIGTERM)
        await poll((meta / "exit_status.json").exists, "exit_status.json")
        status = json.loads((meta / "exit_status.json").read_text())
        assert (status["pid"], status["signal"]) == (task, signal.SIGTERM)
        await poll(lambda: _is_zombie_or_gone(supervisor), "supervisor exit")
        _reap(supervisor)
    finally:
        if agent.poll() is None:
            _stop(agent)
        for pid in (task, supervisor):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        cgroup = f"{prefix}/survivor"
        await poll(lambda: backend.remove(cgroup), "cgroup removal")
        # This backend did not create the prefix, so remove_prefix would not remove it.
        for d in backend.dirs(prefix):
            d.rmdir()


async def test_launches_leave_no_zombies(ctz: Containerizer, make_config: Make) -> None:
    # Earlier tests in this process may have left children (a ZooKeeper
    # server) and, through in-process agents (a subreaper), zombies: not ours.
    before = set(children_of(os.getpid()))
    old_zombies = set(zombies_of(os.getpid()))
    for _ in range(150):
        assert await run(ctz, make_config("/bin/true")) == 0
    codes = await asyncio.gather(*(run(ctz, make_config("/bin/true")) for _ in range(50)))
    assert codes == [0] * 50
    server = ctz.fork_server_pid
    assert server is not None
    # The fork server reaps on SIGCHLD, which may arrive just after the last pidfd fired.
    await poll(lambda: not set(zombies_of(os.getpid(), server)) - old_zombies, "no zombies", timeout_s=10.0)
    assert children_of(server) == []
    assert set(children_of(os.getpid())) - before == {server}


async def test_50_concurrent_launches_share_one_lazily_started_server(
    ctz: Containerizer, make_config: Make
) -> None:
    # Each waits for a gate in its sandbox (its cwd), so none can end (and
    # leave /proc) before it is checked.
    wait_for_gate = "while [ ! -e gate ]; do sleep 0.02; done"
    configs = [make_config("/bin/sh", "-c", wait_for_gate) for _ in range(50)]
    before = set(children_of(os.getpid()))
    pids = await asyncio.gather(*(ctz.launch(c) for c in configs))
    assert len(set(pids)) == 50
    server = ctz.fork_server_pid
    assert set(children_of(os.getpid())) - before == {server}
    for config, pid in zip(configs, pids, strict=True):
        cgroup = _read(f"/proc/{pid}/cgroup")
        assert f"{ctz.cgroup_prefix}/{config.container_id}" in cgroup
    for config in configs:
        (config.sandbox / "gate").touch()
    ends = await asyncio.gather(*(asyncio.wait_for(ctz.wait(c.container_id), 30) for c in configs))
    assert [t.exit_code for t in ends] == [0] * 50
    await asyncio.gather(*(ctz.destroy(c.container_id) for c in configs))


async def test_a_request_bigger_than_a_datagram_goes_through_a_memfd(
    ctz: Containerizer, make_config: Make
) -> None:
    # 300 kB in all; one variable may not exceed 128 KiB (MAX_ARG_STRLEN).
    big = {f"BIG{i}": str(i) * (100 * 1024) for i in range(3)}
    config = make_config("/bin/sh", "-c", 'printf %s "$BIG0$BIG1$BIG2" | wc -c')
    config = ContainerConfig(**{**config.__dict__, "env": {**config.env, **big}})
    assert await run(ctz, config) == 0
    assert (config.sandbox / "stdout").read_text().strip() == str(300 * 1024)


async def test_a_cancelled_launch_leaves_nothing_behind(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sleep", "1000")
    launch = asyncio.create_task(ctz.launch(config))
    await asyncio.sleep(0)
    launch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await launch
    # The container is adopted and removed once the server answers; the fixture
    # then checks that no cgroup is left.
    await poll(lambda: config.container_id not in ctz.containers(), "adopted container removed")
    assert await run(ctz, make_config("/bin/true")) == 0


async def test_close_stops_the_fork_server(tmp_path: Path, make_config: Make) -> None:
    ctz = Containerizer(tmp_path / "work", cgroup_prefix=f"corral-test-{uuid.uuid4()}")
    assert await run(ctz, make_config("/bin/true")) == 0
    server = ctz.fork_server_pid
    assert server is not None
    await ctz.close(grace_s=0.2)
    assert ctz.fork_server_pid is None
    assert _stat(server) is None  # exited and reaped


async def test_in_process_path_still_works(tmp_path: Path, make_config: Make) -> None:
    ctz = Containerizer(tmp_path / "work", cgroup_prefix=f"corral-test-{uuid.uuid4()}", fork_server=False)
    try:
        config = make_config("/bin/sleep", "0.2")
        task_pid = await ctz.launch(config)
        supervisor = json.loads(
            (ctz.work_dir / "containers" / config.container_id / "container.json").read_text()
        )["supervisor_pid"]
        assert _ppid(supervisor) == os.getpid()
        assert _ppid(task_pid) == supervisor
        assert (await ctz.wait(config.container_id)).exit_code == 0
        await ctz.destroy(config.container_id)
        assert ctz.fork_server_pid is None
        assert _stat(supervisor) is None  # reaped through its pidfd
    finally:
        await ctz.close(grace_s=0.2)
