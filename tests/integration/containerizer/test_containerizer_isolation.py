"""Namespaces, capabilities and the container's init, on this host's kernel (root)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, ContainerError, Containerizer, Isolation, kernel
from corral.slave.containerizer.isolation import capability_mask
from corral.slave.containerizer.model import DEFAULT_CAPABILITIES, Termination

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for namespaces and cgroups"),
]
Make = Callable[..., ContainerConfig]


def _mounts() -> set[str]:
    """The host's mounts that a container could leak: proc, tmpfs and anything under /tmp."""
    found = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        point, fstype = fields[4], fields[fields.index("-") + 1]
        if fstype in ("proc", "tmpfs") or point.startswith("/tmp"):
            found.add(f"{point} {fstype} {fields[2]}")
    return found


@pytest.fixture(autouse=True)
def no_mount_leaks() -> Iterator[None]:
    before = _mounts()
    yield
    assert _mounts() - before == set(), "mounts left on the host"


async def poll(check: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            pytest.fail(f"{what} did not happen within {timeout_s} s")
        await asyncio.sleep(0.01)


async def run(ctz: Containerizer, config: ContainerConfig) -> tuple[Termination, str]:
    """Run to the end; the termination and stdout."""
    await ctz.launch(config)
    termination = await asyncio.wait_for(ctz.wait(config.container_id), 30)
    await ctz.destroy(config.container_id)
    return termination, (config.sandbox / "stdout").read_text()


def _read(path: str) -> str:
    return Path(path).read_text()


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _in_pid_ns(ns: str) -> dict[int, str]:
    """Host pid -> cmdline of every process in the pid namespace ``ns`` (a readlink value)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") == ns:
                found[int(entry.name)] = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
                )
        except OSError:
            continue
    return found


async def test_the_command_is_pid_2_under_an_init_and_sees_only_its_processes(
    ctz: Containerizer, make_config: Make
) -> None:
    # echo is a builtin and the glob is expanded by sh: no other process runs.
    config = make_config("/bin/sh", "-c", "echo $$; cat /proc/1/comm; echo /proc/[0-9]*")
    termination, out = await run(ctz, config)
    assert termination.exit_code == 0, termination
    assert out.splitlines() == ["2", "corral-init", "/proc/1 /proc/2"]


async def test_hostname_is_the_containers_and_the_hosts_is_unchanged(
    ctz: Containerizer, make_config: Make
) -> None:
    host = socket.gethostname()
    named = make_config("/bin/cat", "/proc/sys/kernel/hostname", isolation=Isolation(hostname="web-1.corral"))
    default = make_config("/bin/cat", "/proc/sys/kernel/hostname", container_id="Task_1.a")
    assert (await run(ctz, named))[1] == "web-1.corral\n"
    assert (await run(ctz, default))[1] == "Task-1-a\n"
    assert socket.gethostname() == host


async def test_tmp_is_private_and_the_sandbox_stays_reachable(
    ctz: Containerizer, make_config: Make, tmp_path: Path
) -> None:
    probe = Path("/tmp") / f"corral-probe-{uuid.uuid4().hex}"
    # The sandbox is under /tmp here: it is bound back over the tmpfs.
    config = make_config(
        "/bin/sh", "-c", f'echo secret > {probe}; cat {probe}; echo $(ls -A /tmp); cat "$PWD/in"; pwd'
    )
    config.sandbox.mkdir(parents=True)
    (config.sandbox / "in").write_text("from the host\n")
    termination, out = await run(ctz, config)
    assert termination.exit_code == 0, termination
    # Inside, /tmp holds the probe and the path down to the sandbox only.
    top = config.sandbox.relative_to("/tmp").parts[0]
    assert out.splitlines() == [
        "secret",
        " ".join(sorted([probe.name, top])),
        "from the host",
        str(config.sandbox),
    ]
    assert not probe.exists()


def _interfaces(proc_net_dev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:]}


_LOOPBACK_ECHO = (
    "import socket\n"
    "s = socket.create_server(('127.0.0.1', 0))\n"
    "c = socket.create_connection(s.getsockname())\n"
    "a, _ = s.accept(); c.sendall(b'ping'); print(a.recv(4).decode())\n"
    "print(open('/proc/net/dev').read(), end='')\n"
)


async def test_network_none_has_only_a_working_loopback(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/usr/bin/python3", "-c", _LOOPBACK_ECHO, isolation=Isolation(network="none"))
    termination, out = await run(ctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    assert out.startswith("ping\n")
    assert _interfaces(out.split("\n", 1)[1]) == {"lo"}


async def test_network_host_sees_the_host_interfaces(ctz: Containerizer, make_config: Make) -> None:
    termination, out = await run(ctz, make_config("/bin/cat", "/proc/net/dev"))
    assert termination.exit_code == 0
    assert _interfaces(out) == _interfaces(_read("/proc/net/dev"))


async def test_namespaces_differ_from_the_hosts(ctz: Containerizer, make_config: Make) -> None:
    kinds = ("ipc", "uts", "mnt", "pid", "net")
    config = make_config("/bin/sh", "-c", " ; ".join(f"readlink /proc/self/ns/{k}" for k in kinds))
    _, out = await run(ctz, config)
    inside = dict(zip(kinds, out.split(), strict=True))
    host = {k: os.readlink(f"/proc/self/ns/{k}") for k in kinds}
    assert [k for k in kinds if inside[k] == host[k]] == ["net"]  # network "host" by default


def _status_fields(out: str) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


async def test_capabilities_are_dropped_to_the_default_set(ctz: Containerizer, make_config: Make) -> None:
    _, out = await run(ctz, make_config("/bin/grep", "-E", "^(Cap|NoNewPrivs|Uid)", "/proc/self/status"))
    status = _status_fields(out)
    expected = f"{capability_mask(DEFAULT_CAPABILITIES):016x}"
    assert (status["CapEff"], status["CapPrm"], status["CapBnd"]) == (expected,) * 3
    assert (status["CapInh"], status["CapAmb"]) == ("0" * 16,) * 2
    assert status["NoNewPrivs"] == "1"
    assert status["Uid"].split()[0] == "0"


async def test_user_runs_as_nobody_without_capabilities(ctz: Containerizer, make_config: Make) -> None:
    config = make_config(
        "/bin/sh",
        "-c",
        "id -u; id -g; id -G; grep -E '^Cap(Eff|Bnd)' /proc/self/status",
        isolation=Isolation(user=(65534, 65534)),
    )
    termination, out = await run(ctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    lines = out.splitlines()
    assert lines[:3] == ["65534", "65534", "65534"]
    status = _status_fields("\n".join(lines[3:]))
    assert status["CapEff"] == "0" * 16
    assert status["CapBnd"] == f"{capability_mask(DEFAULT_CAPABILITIES):016x}"


async def test_user_gets_its_supplementary_groups(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sh", "-c", "id -G", isolation=Isolation(user=(65534, 65534), groups=(50, 999)))
    termination, out = await run(ctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    assert sorted(out.split(), key=int) == ["50", "999", "65534"]


async def test_no_isolation_keeps_the_old_behaviour(ctz: Containerizer, make_config: Make) -> None:
    config = make_config(
        "/bin/sh",
        "-c",
        "readlink /proc/self/ns/pid; grep CapEff /proc/self/status",
        isolation=Isolation.none(),
    )
    _, out = await run(ctz, config)
    ns, cap_eff = out.splitlines()
    assert ns == os.readlink("/proc/self/ns/pid")
    assert cap_eff == next(line for line in _read("/proc/self/status").splitlines() if "CapEff" in line)


async def test_an_escaped_daemon_dies_with_its_task(ctz: Containerizer, make_config: Make) -> None:
    # setsid + double fork: the daemon is re-parented to the init, in a new session.
    config = make_config("/bin/sh", "-c", "setsid sh -c 'sleep 1000 &' ; sleep 1000")
    task_pid = await ctz.launch(config)
    ns = os.readlink(f"/proc/{task_pid}/ns/pid")
    cmdlines: dict[int, str] = {}

    def two_sleeps() -> bool:
        cmdlines.update(_in_pid_ns(ns))
        return sum(c == "sleep 1000" for c in cmdlines.values()) == 2

    await poll(two_sleeps, "the task's and the daemon's sleep")
    await ctz.kill(config.container_id, grace_s=10.0)
    termination = await ctz.wait(config.container_id)
    assert termination.killed
    # The shell dies of the SIGTERM, or sees its sleep die of it first and
    # exits 128 + 15: both are the kill.
    assert termination.signal == signal.SIGTERM or termination.exit_code == 128 + signal.SIGTERM
    await poll(lambda: all(_state(p) is None for p in cmdlines), f"{cmdlines} reaped")
    await ctz.destroy(config.container_id)


async def test_a_daemon_left_behind_dies_when_the_task_ends(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sh", "-c", "setsid sh -c 'sleep 1000 &'; sleep 0.3")
    task_pid = await ctz.launch(config)
    ns = os.readlink(f"/proc/{task_pid}/ns/pid")
    daemons: set[int] = set()

    def daemon_seen() -> bool:
        daemons.update(p for p, c in _in_pid_ns(ns).items() if c == "sleep 1000")
        return bool(daemons)

    await poll(daemon_seen, "the daemon started")
    termination = await ctz.wait(config.container_id)
    assert termination.exit_code == 0
    # No destroy yet: the kernel killed the namespace when its init exited.
    await poll(lambda: all(_state(p) is None for p in daemons), f"daemon {daemons} gone")
    await ctz.destroy(config.container_id)


async def test_orphans_are_reaped_by_the_init(ctz: Containerizer, make_config: Make) -> None:
    # The subshell exits at once; its `sleep 0.3` is orphaned to PID 1, and sh never waits.
    config = make_config("/bin/sh", "-c", "(sleep 0.3 &) ; sleep 3")
    task_pid = await ctz.launch(config)
    ns = os.readlink(f"/proc/{task_pid}/ns/pid")
    orphans: set[int] = set()

    def orphan_seen() -> bool:
        orphans.update(p for p, c in _in_pid_ns(ns).items() if c == "sleep 0.3")
        return bool(orphans)

    await poll(orphan_seen, "the orphan started")
    # Gone from /proc entirely (not a zombie) while the task still runs.
    await poll(lambda: all(_state(p) is None for p in orphans), f"orphan {orphans} reaped", timeout_s=2.5)
    assert _state(task_pid) not in (None, "Z")
    assert not [p for p in _in_pid_ns(ns) if _state(p) == "Z"]
    await ctz.kill(config.container_id, grace_s=0)
    await ctz.destroy(config.container_id)


async def test_exit_codes_and_signals_pass_through_the_init(ctz: Containerizer, make_config: Make) -> None:
    exited, _ = await run(ctz, make_config("/bin/sh", "-c", "exit 7"))
    signalled, _ = await run(ctz, make_config("/bin/sh", "-c", "kill -USR1 $$"))
    assert (exited.exit_code, exited.signal) == (7, None)
    assert (signalled.exit_code, signalled.signal) == (None, signal.SIGUSR1)


async def test_a_failing_stage_is_named_in_the_launch_error(
    tmp_path: Path, make_config: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The in-process path forks this interpreter, so the patched seam is what the child calls.
    def refuse(name: bytes) -> None:
        raise OSError(1, "sethostname: Operation not permitted")

    monkeypatch.setattr(kernel, "sethostname", refuse)
    ctz = Containerizer(tmp_path / "work", cgroup_prefix=f"corral-test-{uuid.uuid4()}", fork_server=False)
    try:
        with pytest.raises(ContainerError, match="cannot set the hostname: sethostname: Operation not"):
            await ctz.launch(make_config("/bin/true"))
        assert ctz.containers() == []
    finally:
        await ctz.close(grace_s=0)


MQUEUE_PROBE = """
import ctypes, os
rt = ctypes.CDLL("librt.so.1", use_errno=True)
rt.mq_open.restype = ctypes.c_int
fd = rt.mq_open(b"/corral-probe", os.O_CREAT | os.O_RDWR, 0o600, None)
print("queue" if fd >= 0 else os.strerror(ctypes.get_errno()))
print(sorted(os.listdir("/dev/mqueue")))
"""


def _host_has_queue(name: str) -> bool:
    return Path("/dev/mqueue", name).exists()


async def test_dev_mqueue_shows_the_containers_own_message_queues(
    ctz: Containerizer, make_config: Make
) -> None:
    # As runc does, a task with its own IPC namespace gets /dev/mqueue, which
    # lists its queues and no other namespace's.
    config = make_config("/usr/bin/python3", "-c", MQUEUE_PROBE)
    termination, out = await run(ctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    assert out.splitlines() == ["queue", "['corral-probe']"]
    assert not _host_has_queue("corral-probe")  # the host's are apart
