"""A COMMAND health check is confined exactly as its task (security review:
checks ran as the agent's root with every capability, outside the task's
cgroup). Run on this kernel through the agent's own path (health.check_once
with the containerizer's ``enter``), as root and as uid 65534, on the host's
filesystem and on the busybox image: the check's uid, groups, capability
sets, no_new_privs, seccomp mode and cgroups are the task's own, it cannot
write a host path the task cannot, and its processes count against the
task's pids limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.proto import messages_pb2 as pb
from corral.slave import health
from corral.slave.containerizer import ContainerConfig, ContainerError, Containerizer
from corral.slave.containerizer.cgroups.v2 import V2Backend
from corral.slave.containerizer.enter import SPEC_FILE
from corral.slave.containerizer.isolation import capability_mask
from corral.slave.containerizer.model import DEFAULT_CAPABILITIES, Isolation
from corral.slave.containerizer.overlay import Rootfs

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mounts, namespaces and cgroups"),
]
Make = Callable[..., ContainerConfig]
NOBODY = (65534, 65534)
# What the task and its check record: identity, every capability set,
# no_new_privs, seccomp mode, cgroups, working directory.
RECORD = (
    "{ id -u; id -g; id -G; "
    "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; "
    "cat /proc/self/cgroup; pwd; }"
)


#: (on the busybox image, as which user): the four kinds of the escape suite
KINDS = [
    pytest.param(False, NOBODY, id="host-nobody"),
    pytest.param(True, NOBODY, id="image-nobody"),
    pytest.param(False, None, id="host-root"),
    pytest.param(True, None, id="image-root"),
]


@dataclass(frozen=True)
class Running:
    ctz: Containerizer
    config: ContainerConfig

    async def check(self, command: str, timeout_s: float = 10.0) -> health.Result:
        """One COMMAND check of this task, as the agent runs it (health.start)."""
        container_id = self.config.container_id

        async def enter(argv: Sequence[str], env: Mapping[str, str], t: float) -> tuple[int | None, bytes]:
            outcome = await self.ctz.enter(container_id, argv, env, t)
            return outcome.returncode, outcome.output

        check = pb.HealthCheck(
            type=pb.HealthCheck.COMMAND,
            command=pb.CommandInfo(shell=True, value=command),
            timeout_s=timeout_s,
        )
        return await health.check_once(
            check, pid=self.ctz.task_pid(container_id), env=self.config.env, enter=enter
        )

    def read(self, name: str) -> str:
        return (self.config.sandbox / name).read_text()


Start = Callable[..., contextlib.AbstractAsyncContextManager["Running"]]


@pytest.fixture
def start(ctz: Containerizer, make_config: Make, busybox_layers: tuple[Path, ...]) -> Start:
    @contextlib.asynccontextmanager
    async def run(image: bool, user: tuple[int, int] | None, **overrides: object) -> AsyncIterator[Running]:
        """A running task (on the busybox ``image`` or the host's tree, as
        ``user``) that recorded its own confinement in task.out."""
        container_id = f"hc-{uuid.uuid4().hex[:8]}"
        sandbox = make_config("true", container_id=container_id).sandbox
        sandbox.mkdir(parents=True)
        if user:
            os.chown(sandbox, *user)
        extra: dict[str, object] = {}
        if image:
            extra["rootfs"] = Rootfs(busybox_layers)
            extra["env"] = {"PATH": "/bin"}
        config = make_config(
            "/bin/sh",
            "-c",
            f"{RECORD} > task.out.tmp && mv task.out.tmp task.out; exec sleep 600",
            container_id=container_id,
            isolation=overrides.pop(
                "isolation", Isolation(network="none", user=user, groups=(4242,) if user else ())
            ),
            **{"pids_max": 64, **extra, **overrides},
        )
        await ctz.launch(config)
        try:
            async with asyncio.timeout(10):
                while not (sandbox / "task.out").exists():
                    await asyncio.sleep(0.05)
            yield Running(ctz, config)
        finally:
            with contextlib.suppress(ContainerError):
                await ctz.kill(container_id, grace_s=0)
            await ctz.destroy(container_id)

    return run


def fields(record: str) -> dict[str, str]:
    lines = record.strip().splitlines()
    out = {"uid": lines[0], "gid": lines[1], "groups": lines[2]}
    out.update(line.split(":\t", 1) for line in lines[3:] if ":\t" in line)
    out["cgroups"] = "\n".join(sorted(line for line in lines if line[:1].isdigit() and ":/" in line))
    out["cwd"] = lines[-1]
    return out


@pytest.mark.parametrize(("image", "user"), KINDS)
async def test_a_check_has_exactly_its_tasks_confinement(
    start: Start, image: bool, user: tuple[int, int] | None
) -> None:
    async with start(image, user) as task:
        result = await task.check(f"{RECORD} > check.out")
        assert result.healthy, result.message
        mine, its = fields(task.read("check.out")), fields(task.read("task.out"))
    assert mine == its, "the check's confinement differs from its task's"
    assert mine["NoNewPrivs"] == "1"
    assert mine["Seccomp"] == "2"
    assert mine["CapAmb"] == "0000000000000000"
    if user:
        assert (mine["uid"], mine["gid"]) == ("65534", "65534")
        assert sorted(mine["groups"].split()) == ["4242", "65534"]
        assert mine["CapEff"] == mine["CapPrm"] == "0000000000000000"
    else:
        # Root in the task has Docker's default set, never the agent's full one.
        assert mine["uid"] == "0"
        assert int(mine["CapEff"], 16) == int(mine["CapBnd"], 16)
        assert int(mine["CapEff"], 16) & ~capability_mask(DEFAULT_CAPABILITIES) == 0
        assert int(mine["CapEff"], 16) != int(fields_of_agent()["CapEff"], 16)


@pytest.mark.parametrize("image", [False, True], ids=["host-root-userns", "image-root-userns"])
async def test_a_check_of_a_task_in_a_user_namespace_runs_in_it(start: Start, image: bool) -> None:
    isolation = Isolation(network="none", user_namespace=True)
    async with start(image, None, isolation=isolation) as task:
        result = await task.check(f"{RECORD} > check.out; cat /proc/self/uid_map > check.map")
        assert result.healthy, result.message
        mine, its = fields(task.read("check.out")), fields(task.read("task.out"))
        inside, host, _ = (int(f) for f in task.read("check.map").split())
    assert mine == its, "the check's confinement differs from its task's"
    # Its root is the task's: an unprivileged host uid, never the agent's root.
    assert (mine["uid"], inside) == ("0", 0)
    assert host >= 1 << 30


def fields_of_agent() -> dict[str, str]:
    status = Path("/proc/self/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in status if line.startswith("Cap"))


async def test_a_check_cannot_write_a_host_path_its_task_cannot(start: Start) -> None:
    target = Path(f"/var/tmp/corral-hc-test-{uuid.uuid4().hex[:8]}")
    os.mkdir(target, 0o755)
    try:
        async with start(False, NOBODY) as task:
            result = await task.check(f"echo escaped > {target}/proof")
        assert not result.healthy, result.message
        assert not (target / "proof").exists(), "the check wrote the host as another user than its task's"
    finally:
        shutil.rmtree(target, ignore_errors=True)


@pytest.mark.parametrize(("image", "user"), [KINDS[0], KINDS[3]])
async def test_a_check_forking_past_the_tasks_pids_limit_is_contained(
    ctz: Containerizer, start: Start, image: bool, user: tuple[int, int] | None
) -> None:
    limit = 8
    async with start(image, user, pids_max=limit) as task:
        cgroup = f"{ctz.cgroup_prefix}/{task.config.container_id}"
        before = len(ctz.cgroups.procs(cgroup))
        seen = [before]

        async def sample() -> None:
            while True:
                seen.append(len(ctz.cgroups.procs(cgroup)))
                await asyncio.sleep(0.05)

        sampler = asyncio.ensure_future(sample())
        try:
            # 32 children that would outlive the check: killed with it at its timeout.
            result = await task.check("for i in $(seq 32); do sleep 60 & done; wait", timeout_s=2)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        assert not result.healthy
        assert max(seen) > before, "the check's processes were not in the task's cgroup"
        assert max(seen) <= limit, seen
        assert ctz.cgroups.stats(cgroup).pids <= limit
        async with asyncio.timeout(5):
            while len(ctz.cgroups.procs(cgroup)) != before:
                await asyncio.sleep(0.05)


async def test_a_check_that_cannot_enter_fails_and_never_runs_elsewhere(
    ctz: Containerizer, start: Start, tmp_path: Path
) -> None:
    proof = tmp_path / "ran-outside"
    async with start(False, NOBODY) as task:
        # No launch spec (a container launched before checks were confined).
        spec = ctz.work_dir / "containers" / task.config.container_id / SPEC_FILE
        saved = spec.read_bytes()
        spec.unlink()
        assert not ctz.can_enter(task.config.container_id)
        result = await task.check(f"touch {proof}")
        assert not result.healthy
        assert "could not enter" in result.message, result.message
        spec.write_bytes(saved)
        assert ctz.can_enter(task.config.container_id)
        assert (await task.check("true")).healthy
        await ctz.kill(task.config.container_id, grace_s=0)
        await ctz.wait(task.config.container_id)
        ended = await task.check(f"touch {proof}")
    assert not ended.healthy
    assert "could not enter" in ended.message, ended.message
    assert not proof.exists()


async def test_a_check_gets_the_tasks_environment_and_its_own(start: Start) -> None:
    async with start(True, NOBODY, env={"PATH": "/bin", "FROM_TASK": "t"}) as task:
        result = await task.check('test "$FROM_TASK" = t && test "$(hostname)" = "$(cat /etc/hostname)"')
    assert result.healthy, result.message


async def test_a_check_joins_its_tasks_cgroup_on_v2(
    tmp_path: Path, make_config: Make, cgroup2_root: Path
) -> None:
    # This host's resource controllers are on v1; its cgroup2 hierarchy (no
    # controllers) still has cgroup.procs: the check must be listed there.
    root = cgroup2_root
    ctz = Containerizer(
        tmp_path / "work-v2",
        V2Backend(root, require_memory=False),
        cgroup_prefix=f"corral-test-hc-v2-{uuid.uuid4().hex[:8]}",
    )
    config = make_config("/bin/sleep", "600", isolation=Isolation(user=NOBODY))
    try:
        await ctz.launch(config)
        cgroup = f"{ctz.cgroup_prefix}/{config.container_id}"
        task = Running(ctz, config)
        checking = asyncio.ensure_future(task.check("id -u; sleep 1"))
        seen: set[int] = set()
        while not checking.done():
            seen |= ctz.cgroups.procs(cgroup)
            await asyncio.sleep(0.05)
        result = checking.result()
        assert result.healthy, result.message
        assert len(seen - {ctz.task_pid(config.container_id)}) >= 2, seen  # the helper and the check
    finally:
        await ctz.close(grace_s=0.2)
    assert not (root / ctz.cgroup_prefix).exists()


async def test_a_check_counts_against_its_tasks_memory_limit(ctz: Containerizer, start: Start) -> None:
    # 256 MiB, filled, against the task's 64 MiB: killed by the kernel, not
    # run on the agent's memory.
    hog = "python3 -c 'b = b\"x\" * (256 << 20)'"
    async with start(False, NOBODY, mem_bytes=64 << 20) as task:
        result = await task.check(hog)
        assert not result.healthy, "the check allocated past its task's memory limit"
        assert "status 137" in result.message, result.message
        assert ctz.state(task.config.container_id) == "running"
