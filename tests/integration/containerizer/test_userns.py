"""User namespaces (issue 15) on this kernel: a task's root is an unprivileged
host uid, host-owned files stay out of its reach, and ordinary work still
succeeds, on the host's filesystem and on the busybox image.

Each container gets its own host id range from a registry in the test's
temporary directory, so these tests never meet the host's real claims.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, Containerizer
from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.isolators.userns import RANGE_SIZE, UserNamespaceIsolator
from corral.slave.containerizer.model import ALL_CAPABILITIES, Isolation, Termination
from corral.slave.containerizer.overlay import Rootfs
from corral.slave.containerizer.volumes import Volume
from corral.testing_images import build_busybox_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mounts, namespaces and cgroups"),
]
Make = Callable[..., ContainerConfig]
FIRST = 1 << 30


@pytest.fixture
async def uctz(tmp_path: Path) -> AsyncIterator[Containerizer]:
    containerizer = Containerizer(
        tmp_path / "work",
        cgroup_prefix=f"corral-test-{uuid.uuid4()}",
        userns=UserNamespaceIsolator(tmp_path / "registry", FIRST, 8),
    )
    try:
        yield containerizer
    finally:
        await containerizer.close(grace_s=0.2)
        assert not list((tmp_path / "registry").glob("[0-9]*")), "id ranges left claimed"


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ...]:
    if not Path("/bin/busybox").exists():
        pytest.skip("needs Debian's busybox-static (/bin/busybox)")
    root = tmp_path_factory.mktemp("images")
    store = ImageStore(root / "store")
    return store.layer_dirs(store.import_tarball(build_busybox_image(root / "busybox.tar")))


@pytest.fixture(params=["host", "image"])
def on(request: pytest.FixtureRequest, layers: tuple[Path, ...]) -> dict[str, object]:
    """Where the task runs: the host's filesystem or the busybox image."""
    if request.param == "host":
        return {}
    return {"rootfs": Rootfs(layers), "env": {"PATH": "/bin"}}


async def run(ctz: Containerizer, config: ContainerConfig) -> tuple[Termination, str]:
    await ctz.launch(config)
    try:
        async with asyncio.timeout(30):
            termination = await ctz.wait(config.container_id)
    finally:
        await ctz.kill(config.container_id, grace_s=0)
        await ctz.destroy(config.container_id)
    return termination, (config.sandbox / "stdout").read_text()


def proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_text()


def userns(**extra: object) -> Isolation:
    return Isolation(network="none", user_namespace=True, **extra)  # type: ignore[arg-type]


async def test_root_in_the_container_is_an_unprivileged_host_uid(
    uctz: Containerizer, make_config: Make, on: dict[str, object]
) -> None:
    config = make_config("/bin/sh", "-c", "id -u; cat /proc/self/uid_map", isolation=userns(), **on)
    termination, out = await run(uctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    uid, mapping = out.splitlines()
    inside, host, size = (int(f) for f in mapping.split())
    assert (uid, inside, size) == ("0", 0, RANGE_SIZE)
    assert host >= FIRST, f"container root is host uid {host}"


async def test_the_task_runs_as_its_range_seen_from_the_host(uctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sleep", "30", isolation=userns())
    pid = await uctz.launch(config)
    try:
        status = proc(pid, "status")
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        groups = next(line for line in status.splitlines() if line.startswith("Groups:")).split()[1:]
        assert all(int(u) >= FIRST for u in uids), status
        # No host group (root's gid 0) is left to grant access to host files.
        assert groups == [], status
    finally:
        await uctz.kill(config.container_id, grace_s=0)
        await uctz.destroy(config.container_id)


async def test_writing_a_host_owned_file_through_a_bind_is_refused(
    uctz: Containerizer, make_config: Make, on: dict[str, object], tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    (shared / "owned-by-host-root").write_text("host\n")
    script = "echo x >> data/owned-by-host-root; echo append=$?; touch data/new; echo create=$?"
    config = make_config(
        "/bin/sh", "-c", script, isolation=userns(), volumes=(Volume("data", str(shared)),), **on
    )
    termination, out = await run(uctz, config)
    results = dict(line.split("=") for line in out.split())
    assert results.keys() == {"append", "create"}, out
    assert "0" not in results.values(), (out, termination.stderr_tail)
    assert "Permission denied" in termination.stderr_tail
    assert (shared / "owned-by-host-root").read_text() == "host\n"
    assert not (shared / "new").exists()


async def test_ordinary_work_still_succeeds(
    uctz: Containerizer, make_config: Make, on: dict[str, object]
) -> None:
    script = (
        "set -e; echo hi > out; mkdir d; echo t > /tmp/t; cat out /tmp/t | tr a-z A-Z | wc -l; "
        "chown 1000:1000 d; echo ok"
    )
    config = make_config("/bin/sh", "-c", script, isolation=userns(), **on)
    termination, out = await run(uctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    assert out.split() == ["2", "ok"]
    # The sandbox is idmapped: on disk what the container's root wrote is host root's.
    assert (config.sandbox / "out").stat().st_uid == 0
    assert (config.sandbox / "d").stat().st_uid == 1000


async def test_image_root_owns_its_own_copy_of_the_image(
    uctz: Containerizer, make_config: Make, layers: tuple[Path, ...]
) -> None:
    script = "set -e; stat -c %u /etc /bin/busybox; echo x >> /etc/hostname; touch /new; echo ok"
    config = make_config(
        "/bin/sh", "-c", script, isolation=userns(), rootfs=Rootfs(layers), env={"PATH": "/bin"}
    )
    termination, out = await run(uctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    assert out.split() == ["0", "0", "ok"]
    # The image's own files are untouched and still host root's.
    assert all(os.stat(layer).st_uid == 0 for layer in layers)


async def test_a_user_in_the_container_is_mapped_too(uctz: Containerizer, make_config: Make) -> None:
    script = "id -u; id -g; cut -c12-22 /proc/self/uid_map"
    config = make_config("/bin/sh", "-c", script, isolation=userns(user=(1000, 1000)))
    termination, out = await run(uctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    uid, gid, host = out.split()
    assert (uid, gid) == ("1000", "1000")
    assert int(host) >= FIRST


async def test_concurrent_containers_get_distinct_ranges(uctz: Containerizer, make_config: Make) -> None:
    configs = [make_config("/bin/sleep", "30", isolation=userns()) for _ in range(3)]
    pids = [await uctz.launch(c) for c in configs]
    try:
        hosts = set()
        for pid in pids:
            mapping = proc(pid, "uid_map").split()
            hosts.add(int(mapping[1]))
        assert len(hosts) == 3, hosts
    finally:
        for c in configs:
            await uctz.kill(c.container_id, grace_s=0)
            await uctz.destroy(c.container_id)


async def test_an_id_beyond_the_range_is_refused(uctz: Containerizer, make_config: Make) -> None:
    config = make_config("true", isolation=userns(user=(70000, 70000)))
    with pytest.raises(Exception, match="ids must be below 65536"):
        await uctz.launch(config)
    assert config.container_id not in uctz.containers()


PROBE = Path(__file__).with_name("escape_probe.py")
PYTHON = os.path.realpath("/usr/bin/python3")
EVERY_LAYER_OFF = {
    "seccomp_profile": "unconfined",
    "capabilities": ALL_CAPABILITIES,
    "no_new_privs": False,
}


@pytest.mark.parametrize("name", ["mount_tmpfs", "sethostname"])
@pytest.mark.parametrize("in_userns", [True, False], ids=["userns", "control"])
async def test_root_with_every_other_layer_off_still_cannot_act_as_host_root(
    uctz: Containerizer, make_config: Make, name: str, in_userns: bool
) -> None:
    """Every capability, no seccomp filter, no no_new_privs: only the user
    namespace is left between the task's root and host root. The control
    (the same task without one) shows each probe is one host root passes."""
    config = make_config(
        PYTHON,
        "escape_probe.py",
        name,
        isolation=Isolation(network="none", user_namespace=in_userns, **EVERY_LAYER_OFF),  # type: ignore[arg-type]
    )
    config.sandbox.mkdir(parents=True)
    shutil.copy(PROBE, config.sandbox / "escape_probe.py")
    termination, out = await run(uctz, config)
    assert termination.exit_code == 0, termination.stderr_tail
    probe_name, _, outcome = out.strip().partition(" ")
    assert probe_name == name, out
    if in_userns:
        assert outcome == "EPERM"
    else:
        assert outcome == "ok"
