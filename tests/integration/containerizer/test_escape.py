"""The escape suite (issue 15): each attempt a task could make on the host, run
inside a real task on this kernel, as root and as uid 65534, on the busybox
image and on the host's filesystem. Every attempt must be refused (EPERM,
EACCES, EROFS), or find nothing to act on (a masked file reads empty, another
tenant's cgroup or /dev/kvm is absent), and ordinary work must still succeed.

The probe (escape_probe.py, standard library only) runs on the image with the
host's /usr bound read-only, so the same Python code runs in all four kinds.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, Containerizer
from corral.slave.containerizer.model import Isolation
from corral.slave.containerizer.overlay import Rootfs
from corral.slave.containerizer.volumes import Volume

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mounts, namespaces and cgroups"),
]
Make = Callable[..., ContainerConfig]
PROBE = Path(__file__).with_name("escape_probe.py")
PYTHON = os.path.realpath("/usr/bin/python3")
DENIED = {"EPERM", "EACCES", "EROFS"}
NOBODY = (65534, 65534)
HOST_HAS_KVM = os.path.exists("/dev/kvm")


@dataclass(frozen=True)
class Kind:
    image: bool
    user: tuple[int, int] | None
    #: in a user namespace of its own (its root an unprivileged host uid)
    userns: bool = False

    def __str__(self) -> str:
        user = "-nobody" if self.user else "-root"
        return ("image" if self.image else "host") + user + ("-userns" if self.userns else "")


KINDS = [
    Kind(False, None),
    Kind(False, NOBODY),
    Kind(True, None),
    Kind(True, NOBODY),
    Kind(False, None, userns=True),
    Kind(True, None, userns=True),
]


@pytest.fixture(scope="module")
def layers(busybox_layers: tuple[Path, ...]) -> tuple[Path, ...]:
    if not PYTHON.startswith("/usr/"):
        pytest.skip(f"the probe needs a python3 under /usr, found {PYTHON}")
    return busybox_layers


@pytest.fixture(params=KINDS, ids=str)
def kind(request: pytest.FixtureRequest) -> Kind:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def other(ctz: Containerizer, make_config: Make) -> AsyncIterator[str]:
    """Another tenant's task, running: its cgroup path (relative to a hierarchy's root)."""
    config = make_config("/bin/sleep", "600")
    await ctz.launch(config)
    try:
        yield f"{ctz.cgroup_prefix}/{config.container_id}"
    finally:
        await ctz.kill(config.container_id, grace_s=0)
        await ctz.destroy(config.container_id)


async def probe(
    ctz: Containerizer, make: Make, layers: tuple[Path, ...], kind: Kind, name: str, *args: str
) -> str:
    container_id = f"esc-{uuid.uuid4().hex[:8]}"
    sandbox = make("true", container_id=container_id).sandbox
    sandbox.mkdir(parents=True)
    shutil.copy(PROBE, sandbox / "escape_probe.py")
    if kind.user:
        os.chown(sandbox, *kind.user)
    extra: dict[str, object] = {}
    if kind.image:
        # The image has no Python: the host's, read-only, at the same paths.
        extra["rootfs"] = Rootfs(layers)
        extra["volumes"] = tuple(
            Volume(target, source, read_only=True)
            for target, source in (("/usr", "/usr"), ("/lib", "/usr/lib"), ("/lib64", "/usr/lib64"))
        )
        extra["env"] = {"PATH": "/bin:/usr/bin"}
    config = make(
        PYTHON,
        "escape_probe.py",
        name,
        *args,
        container_id=container_id,
        isolation=Isolation(network="none", user=kind.user, user_namespace=kind.userns),
        pids_max=256,
        **extra,
    )
    await ctz.launch(config)
    async with asyncio.timeout(30):
        termination = await ctz.wait(container_id)
    await ctz.destroy(container_id)
    out = (sandbox / "stdout").read_text()
    assert termination.exit_code == 0, f"{name} in {kind}: {termination.message}\n{termination.stderr_tail}"
    probe_name, _, outcome = out.strip().partition(" ")
    assert probe_name == name, out
    return outcome


Attempt = Callable[..., Awaitable[str]]


@pytest.fixture
def attempt(ctz: Containerizer, make_config: Make, layers: tuple[Path, ...], kind: Kind) -> Attempt:
    async def run(name: str, *args: str) -> str:
        return await probe(ctz, make_config, layers, kind, name, *args)

    return run


async def test_raise_own_memory_limit(attempt: Attempt) -> None:
    assert await attempt("raise_memory_limit") in DENIED


async def test_move_self_into_the_root_pids_cgroup(attempt: Attempt) -> None:
    assert await attempt("move_to_root_pids_cgroup") in DENIED


async def test_freeze_another_task(attempt: Attempt, ctz: Containerizer, other: str) -> None:
    assert await attempt("freeze_another_task", other) in DENIED | {"absent"}
    assert not ctz.cgroups.frozen(other)


async def test_write_printk_ratelimit(attempt: Attempt) -> None:
    assert await attempt("write_printk_ratelimit") in DENIED


async def test_open_core_pattern_for_writing(attempt: Attempt) -> None:
    assert await attempt("open_core_pattern") in DENIED


async def test_write_block_queue_settings(attempt: Attempt) -> None:
    assert await attempt("write_block_queue") in DENIED | {"absent"}


async def test_open_dev_kvm(attempt: Attempt) -> None:
    if not HOST_HAS_KVM:
        pytest.skip("this host has no /dev/kvm to reach")
    assert await attempt("open_kvm") in DENIED | {"absent"}


async def test_mknod_the_kvm_device(attempt: Attempt) -> None:
    # The devices cgroup refuses the node to root; uid 65534 has no CAP_MKNOD.
    assert await attempt("mknod_kvm") == "EPERM"


async def test_read_proc_keys(attempt: Attempt) -> None:
    assert await attempt("read_proc_keys") == "empty"


async def test_read_proc_timer_list(attempt: Attempt) -> None:
    assert await attempt("read_timer_list") == "empty"


async def test_unshare_a_user_namespace(attempt: Attempt) -> None:
    assert await attempt("unshare_user") == "EPERM"


async def test_clone_into_a_user_namespace(attempt: Attempt) -> None:
    assert await attempt("clone_newuser") == "EPERM"


async def test_add_key(attempt: Attempt) -> None:
    assert await attempt("add_key") == "EPERM"


async def test_mount(attempt: Attempt) -> None:
    assert await attempt("mount_tmpfs") == "EPERM"


async def test_kcmp_on_another_process_is_refused(attempt: Attempt) -> None:
    assert await attempt("kcmp_other") == "EPERM"


async def test_a_syscall_newer_than_libseccomp_gets_enosys(attempt: Attempt) -> None:
    # mseal (462) is unknown to libseccomp 2.5.4: a deny list would let it
    # through; the filter's prefix answers ENOSYS, as runc's stub does.
    assert await attempt("future_syscall") == "ENOSYS"


async def test_the_task_runs_under_a_seccomp_filter(attempt: Attempt) -> None:
    assert await attempt("seccomp_mode") == "2"


async def test_ordinary_work_still_succeeds(attempt: Attempt) -> None:
    # sandbox and /tmp writes, a shell pipeline, a port bound on its own network
    assert await attempt("ordinary_work") == "ok"


@pytest.mark.parametrize("kind", [Kind(False, None)], ids=str)
async def test_the_probes_see_an_escape_where_nothing_is_hardened(
    ctz: Containerizer, make_config: Make, layers: tuple[Path, ...], kind: Kind
) -> None:
    """The control: without isolation (the behaviour before issue 15) the same
    probes succeed, so a refusal above is the hardening's doing."""

    def unhardened(*argv: str, **fields: object) -> ContainerConfig:
        fields["isolation"] = Isolation.none()
        fields.pop("volumes", None)
        return make_config(*argv, **fields)

    for name, escaped in (
        ("raise_memory_limit", "ok"),
        ("unshare_user", "ok"),
        ("add_key", "ok"),
        ("read_timer_list", "ok"),
        ("seccomp_mode", "0"),
        ("future_syscall", "ok"),  # mseal(0, 0, 0) seals nothing and succeeds
    ):
        assert await probe(ctz, unhardened, layers, kind, name) == escaped, name


@pytest.mark.skipif(not HOST_HAS_KVM, reason="this host has no /dev/kvm to offer")
@pytest.mark.parametrize("image", [False, True], ids=["host", "image"])
async def test_a_device_the_agent_offers_is_bound_and_allowed(
    ctz: Containerizer, make_config: Make, layers: tuple[Path, ...], image: bool
) -> None:
    extra: dict[str, object] = {"rootfs": Rootfs(layers), "env": {"PATH": "/bin"}} if image else {}
    script = "ls /dev | tr '\\n' ' '; echo; : < /dev/kvm && echo opened; : < /dev/null && echo null"
    config = make_config("/bin/sh", "-c", script, isolation=Isolation(devices=("/dev/kvm",)), **extra)
    await ctz.launch(config)
    async with asyncio.timeout(30):
        termination = await ctz.wait(config.container_id)
    await ctz.destroy(config.container_id)
    lines = (config.sandbox / "stdout").read_text().splitlines()
    assert termination.exit_code == 0, termination.stderr_tail
    assert "kvm" in lines[0].split()
    assert lines[1:] == ["opened", "null"]
