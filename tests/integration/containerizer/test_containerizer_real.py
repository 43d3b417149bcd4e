"""The containerizer on this host's real cgroups with real processes (root)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, ContainerError, Containerizer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups"),
]
Make = Callable[..., ContainerConfig]


async def poll(
    check: Callable[[], bool], what: str, timeout_s: float = 5.0, interval_s: float = 0.01
) -> None:
    """Wait until ``check()`` holds; fail naming what did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(interval_s)


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def run(ctz: Containerizer, config: ContainerConfig) -> object:
    await ctz.launch(config)
    termination = await asyncio.wait_for(ctz.wait(config.container_id), 30)
    await ctz.destroy(config.container_id)
    return termination


async def test_stdout_and_stderr_go_to_the_sandbox(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sh", "-c", "echo hello; echo err >&2")
    await ctz.launch(config)
    termination = await ctz.wait(config.container_id)
    assert (termination.exit_code, termination.signal, termination.killed) == (0, None, False)
    assert (config.sandbox / "stdout").read_text() == "hello\n"
    assert (config.sandbox / "stderr").read_text() == "err\n"
    assert termination.stderr_tail == "err"
    # The supervisor's record, meant for recovery by a restarted agent.
    meta = ctz.work_dir / "containers" / config.container_id
    status = json.loads((meta / "exit_status.json").read_text())
    assert status["exit_code"] == 0
    assert json.loads((meta / "container.json").read_text())["task_pid"] == status["pid"]
    await ctz.destroy(config.container_id)
    await ctz.destroy(config.container_id)  # idempotent
    assert ctz.containers() == []
    assert (config.sandbox / "stdout").exists()  # the sandbox stays


async def test_exit_code_is_reported(ctz: Containerizer, make_config: Make) -> None:
    termination = await run(ctz, make_config("/bin/sh", "-c", "exit 3"))
    assert termination.exit_code == 3  # type: ignore[attr-defined]
    assert termination.message == "exited with code 3"  # type: ignore[attr-defined]


async def test_missing_binary_exits_127_like_a_shell(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("no-such-program-xyz", "arg")
    await ctz.launch(config)
    termination = await ctz.wait(config.container_id)
    assert termination.exit_code == 127
    assert termination.stderr_tail == ("corral: exec no-such-program-xyz: No such file or directory")


async def test_task_runs_in_its_cgroup_with_a_clean_environment(
    ctz: Containerizer, make_config: Make
) -> None:
    # SIGPIPE must be back to default (Python ignores it): `yes` then dies quietly.
    config = make_config(
        "/bin/sh",
        "-c",
        "cat /proc/self/cgroup /sys/fs/cgroup/memory/memory.limit_in_bytes; echo FOO=$FOO; "
        "yes | head -n1; ls /proc/self/fd",
    )
    config = ContainerConfig(**{**config.__dict__, "env": {**config.env, "FOO": "bar"}})
    termination = await run(ctz, config)
    out = (config.sandbox / "stdout").read_text()
    # In its cgroup namespace the task's own cgroup is the root, and the
    # read-only cgroupfs it sees is its own (its memory limit).
    assert ":memory:/\n" in out
    assert f"\n{config.mem_bytes}\n" in out
    assert "FOO=bar\n" in out
    assert termination.stderr_tail == ""  # type: ignore[attr-defined]
    # Only stdin/stdout/stderr and ls's own directory fd: no agent fds leak in.
    assert out.rsplit("y\n", 1)[1].split() == ["0", "1", "2", "3"]


async def test_kill_reaches_the_whole_tree(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sh", "-c", "sleep 1000 & setsid sh -c 'sleep 1000' & sleep 1000 & wait")
    await ctz.launch(config)
    pids: set[int] = set()

    def four_procs() -> bool:
        pids.update(ctz.cgroups.procs(f"{ctz.cgroup_prefix}/{config.container_id}"))
        return len(pids) >= 6

    await poll(four_procs, "the init, shell, 3 sleeps and a setsid shell in the cgroup")
    start = time.monotonic()
    await ctz.kill(config.container_id, grace_s=30.0)
    assert time.monotonic() - start < 15.0  # everything obeyed SIGTERM: far less than the grace
    termination = await ctz.wait(config.container_id)
    assert termination.killed
    # The shell dies of the SIGTERM, or (when its children die of it first)
    # returns from `wait` and exits: killed either way, never SIGKILLed.
    assert termination.signal in (signal.SIGTERM, None)
    await poll(lambda: not any(alive(p) for p in pids), f"all of {sorted(pids)} gone from /proc")
    await ctz.kill(config.container_id)  # idempotent


async def test_kill_escalates_to_sigkill_after_grace(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sh", "-c", "trap '' TERM; sleep 1000")
    await ctz.launch(config)
    cgroup = f"{ctz.cgroup_prefix}/{config.container_id}"
    # Wait for sleep itself: only then is the trap certainly in place
    # (dash may exec sleep as its last command, or fork it).
    await poll(lambda: "sleep" in _comms(ctz.cgroups.procs(cgroup)), "sleep running in the cgroup")
    pids = ctz.cgroups.procs(cgroup)
    start = time.monotonic()
    await ctz.kill(config.container_id, grace_s=0.5)
    elapsed = time.monotonic() - start
    # The grace is honoured; the upper bound only catches a hang (CI machines are slow).
    assert 0.5 <= elapsed < 10.0
    termination = await ctz.wait(config.container_id)
    assert (termination.killed, termination.signal) == (True, signal.SIGKILL)
    await poll(lambda: not any(alive(p) for p in pids), f"all of {sorted(pids)} gone from /proc")


async def test_out_of_memory_is_a_memory_limitation(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/usr/bin/python3", "-c", "b = bytearray(200 * 1024 * 1024)", mem_bytes=32 << 20)
    await ctz.launch(config)
    termination = await ctz.wait(config.container_id)
    assert termination.signal == signal.SIGKILL
    assert not termination.killed
    assert termination.limitation is not None
    assert termination.limitation.kind == "memory"
    assert termination.limitation.limit == 32 << 20
    assert "memory limit 32.0 MiB exceeded (peak 32.0 MiB)" in termination.limitation.message
    assert "OOM" in termination.message


async def test_cpu_and_memory_limits_are_written(ctz: Containerizer, make_config: Make) -> None:
    if ctz.cgroups.version != "v1":
        pytest.skip("this host runs cgroup v2; the v2 files are covered by the unit tests")
    cases = [(500, False, "512", "-1"), (250, False, "256", "-1"), (1500, True, "1536", "150000")]
    for cpus_milli, hard_cap, shares, quota in cases:
        config = make_config("/bin/sleep", "100", cpus_milli=cpus_milli, cpu_hard_cap=hard_cap)
        await ctz.launch(config)
        cpu, memory = (
            Path("/sys/fs/cgroup") / c / ctz.cgroup_prefix / config.container_id for c in ("cpu", "memory")
        )
        assert (cpu / "cpu.shares").read_text().strip() == shares
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == quota
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(128 << 20)
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            assert memsw.read_text().strip() == str(128 << 20)
        await ctz.kill(config.container_id, grace_s=0)
        await ctz.destroy(config.container_id)


async def test_pids_limit_stops_a_fork_storm(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sh", "-c", "for i in $(seq 50); do sleep 30 & done; wait", pids_max=10)
    await ctz.launch(config)
    termination = await asyncio.wait_for(ctz.wait(config.container_id), 20)
    assert termination.exit_code not in (None, 0)
    assert "fork" in termination.stderr_tail.lower()
    assert termination.limitation is not None
    assert termination.limitation.kind == "pids"
    assert termination.limitation.limit == 10
    await ctz.destroy(config.container_id)  # kills the sleeps left behind


async def test_usage_of_a_running_task(ctz: Containerizer, make_config: Make) -> None:
    code = (
        "import sys, time\n"
        "b = bytearray(20 * 1024 * 1024)\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('ready', flush=True)\n"
        "time.sleep(100)\n"
    )
    config = make_config("/usr/bin/python3", "-c", code)
    await ctz.launch(config)
    stdout = config.sandbox / "stdout"
    await poll(lambda: stdout.exists() and "ready" in stdout.read_text(), "task ready", 10)
    usage = await ctz.usage(config.container_id)
    assert usage.cpu_time_s >= 0.25
    assert 20 << 20 <= usage.mem_bytes <= usage.mem_peak_bytes < 128 << 20
    assert usage.pids == 2  # the container's init (PID 1 inside) and python


async def test_200_sequential_and_50_concurrent_launches(ctz: Containerizer, make_config: Make) -> None:
    for _ in range(200):
        termination = await run(ctz, make_config("/bin/true"))
        assert termination.exit_code == 0  # type: ignore[attr-defined]
    results = await asyncio.gather(*(run(ctz, make_config("/bin/true")) for _ in range(50)))
    assert [t.exit_code for t in results] == [0] * 50  # type: ignore[attr-defined]
    assert ctz.containers() == []
    for d in ctz.cgroups.dirs(ctz.cgroup_prefix):
        assert [p for p in d.iterdir() if p.is_dir()] == [], f"cgroups left in {d}"


async def test_duplicate_and_unknown_ids_are_refused(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sleep", "100")
    await ctz.launch(config)
    with pytest.raises(ContainerError, match="already exists"):
        await ctz.launch(config)
    with pytest.raises(ContainerError, match="not known"):
        await ctz.wait("nope")
    assert ctz.containers() == [config.container_id]
    # close() in the fixture kills and removes this one.


def _comms(pids: set[int]) -> set[str]:
    out = set()
    for pid in pids:
        try:
            out.add(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return out
