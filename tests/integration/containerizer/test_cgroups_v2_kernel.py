"""The v2 backend against the real kernel, on this host's cgroup2 mount.

Hosts here are hybrid: the resource controllers are bound to v1, and the
cgroup2 hierarchy beside them (``/sys/fs/cgroup/unified``) has none. Its core
interface is the kernel's all the same: creating cgroups, moving processes,
``cgroup.procs``, ``cgroup.freeze`` and ``cgroup.events``, ``cgroup.kill``.
This checks those for real; the limits (memory, cpu, pids) are checked
against a fake tree (tests/unit/containerizer/test_cgroups_v2_fake_tree.py).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.slave.containerizer.cgroups import files
from corral.slave.containerizer.cgroups.base import CgroupLimits
from corral.slave.containerizer.cgroups.v2 import V2Backend

pytestmark = [pytest.mark.root]


def wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def v2(cgroup2_root: Path) -> Iterator[tuple[V2Backend, str]]:
    root = cgroup2_root
    backend = V2Backend(root, require_memory=False)
    prefix = f"corral-test-v2-{uuid.uuid4().hex[:8]}"
    backend.prepare_prefix(prefix)
    try:
        yield backend, prefix
    finally:
        for child in sorted((root / prefix).glob("*/"), reverse=True):
            backend.kill_all(f"{prefix}/{child.name}")
            wait_until(lambda c=child: not files.read_pids(c / "cgroup.procs"), "the test's cgroup to empty")
            backend.remove(f"{prefix}/{child.name}")
        backend.remove_prefix(prefix)


def start_in(backend: V2Backend, path: str, command: str) -> subprocess.Popen[bytes]:
    (procs_file,) = backend.create(path, CgroupLimits.for_task(100, 64 << 20, False, None))
    # The shell joins before it runs the command, so whatever that forks starts inside too.
    script = 'echo $$ > "$1" && exec sh -c "$2"'
    return subprocess.Popen(["sh", "-c", script, "sh", str(procs_file), command])


@pytest.mark.parametrize("cgroup_kill", [True, False], ids=["cgroup.kill", "freeze-and-kill"])
def test_processes_freeze_thaw_and_all_die_with_their_children(
    v2: tuple[V2Backend, str], cgroup_kill: bool
) -> None:
    backend, prefix = v2
    backend.use_cgroup_kill = cgroup_kill
    path = f"{prefix}/c1"
    proc = start_in(backend, path, "sleep 300 & sleep 300 & wait")
    try:
        wait_until(lambda: len(backend.procs(path)) == 3, "the shell and its two children in the cgroup")
        assert proc.pid in backend.procs(path)
        backend.set_frozen(path, True)
        wait_until(lambda: backend.frozen(path), "cgroup.events to say frozen")
        backend.set_frozen(path, False)
        wait_until(lambda: not backend.frozen(path), "the thaw")
        backend.kill_all(path)
        assert proc.wait(timeout=10) == -9
        wait_until(lambda: not backend.procs(path), "every process to be gone")
        assert backend.remove(path)
        assert not (backend.root / path).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_prefix_that_exists_already_is_left_for_its_owner(v2: tuple[V2Backend, str]) -> None:
    backend, prefix = v2
    other = V2Backend(backend.root, require_memory=False)
    other.prepare_prefix(prefix)  # made by the fixture's backend: not this one's to remove
    other.remove_prefix(prefix)
    assert (backend.root / prefix).is_dir()


# What a process in the cgroup gets when it opens each node for reading and
# writing, and when it makes one.
OPEN_AND_MKNOD = """
import os, sys
out = []
for path in ("/dev/null", "/dev/loop-control", "/dev/kmsg"):
    try:
        os.close(os.open(path, os.O_RDWR)); out.append("ok")
    except OSError as e:
        out.append(str(e.errno))
node = os.path.join(sys.argv[1], "node")
try:
    os.mknod(node, 0o600 | 0o020000, os.makedev(1, 11)); out.append("ok")
except OSError as e:
    out.append(str(e.errno))
print(" ".join(out))
"""


@pytest.mark.parametrize("device_control", [True, False], ids=["program", "control"])
def test_a_device_program_allows_only_the_rules(
    v2: tuple[V2Backend, str], tmp_path: Path, device_control: bool
) -> None:
    """A BPF_PROG_TYPE_CGROUP_DEVICE program on the real kernel (no controller
    needed): /dev/null (a default rule) and /dev/loop-control (the offered
    device's rule) open, /dev/kmsg (c 1:11, in no rule) is refused, and so is
    a mknod of its numbers. The control, without a program, gets them all."""
    backend, prefix = v2
    offered = ("c 10:237 rw",) if device_control else None
    limits = CgroupLimits.for_task(100, 64 << 20, False, None, offered)
    (procs_file,) = backend.create(f"{prefix}/dev", limits)
    script = 'echo $$ > "$1"; shift; exec "$@"'
    probe = ["python3", "-c", OPEN_AND_MKNOD, str(tmp_path)]
    result = subprocess.run(
        ["sh", "-c", script, "sh", str(procs_file), *probe], capture_output=True, check=True, timeout=30
    )
    if device_control:
        assert result.stdout.split() == [b"ok", b"ok", b"1", b"1"]  # EPERM
    else:
        assert result.stdout.split() == [b"ok", b"ok", b"ok", b"ok"]
