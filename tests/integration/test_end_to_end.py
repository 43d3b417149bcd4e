"""A master, two agents and a framework over real gRPC on loopback, running
real processes in real cgroups."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
from pathlib import Path

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks import Task, TaskState
from corral.resources import Resources
from corral.slave.agent import Agent, TaskRun
from corral.testing import framework

pytestmark = [pytest.mark.root]
SMALL = Resources.of(cpus=0.1, mem=32)


def _pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        # A zombie is gone for our purposes; check its state.
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


async def test_fifty_tasks_finish_across_two_agents(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        pending = [Task(f"t{i}", f"echo task {i}", SMALL) for i in range(50)]
        agents_used: set[str] = set()
        async with asyncio.timeout(30):
            while pending:
                offer = await rec.next_offer()
                take = []
                left = offer.resources
                while pending and left.contains(pending[0].resources) and len(take) < 15:
                    task = pending.pop(0)
                    take.append(task)
                    left = left - task.resources
                if take:
                    agents_used.add(offer.agent_id)
                    driver.launch(offer, take, refuse_s=0)
                else:
                    driver.decline(offer, refuse_s=0)
        for i in range(50):
            status = await rec.wait_terminal(f"t{i}")
            assert status.state is TaskState.FINISHED, status
            assert status.exit_code == 0
        assert len(agents_used) == 2
        # Every update arrived in order per task: STARTING, RUNNING, FINISHED.
        states = [u.state for u in rec.updates if u.task_id == "t7"]
        assert states == [TaskState.STARTING, TaskState.RUNNING, TaskState.FINISHED]


async def test_failing_command_reports_exit_code_and_stderr(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("bad", "echo oops >&2; exit 3", SMALL)])
        status = await rec.wait_terminal("bad")
        assert status.state is TaskState.FAILED
        assert status.exit_code == 3
        assert "exited with status 3" in status.message
        assert "oops" in status.stderr_tail


async def test_kill_ends_task_and_its_whole_process_tree(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        # A tree: the shell, two background sleeps, and one that ignores SIGTERM.
        cmd = "sleep 1000 & sleep 1000 & (trap '' TERM; sleep 1000) & wait"
        driver.launch(offer, [Task("victim", cmd, SMALL, kill_grace_s=0.5)])
        await rec.wait_state("victim", TaskState.RUNNING)
        # The task has its own pid namespace: find its processes from the host,
        # through its cgroup.
        agent, run = _run_of(cluster, "victim")
        cgroup = f"{agent.containerizer.cgroup_prefix}/{run.container_id}"
        async with asyncio.timeout(10):
            while len(pids := sorted(agent.containerizer.cgroups.procs(cgroup))) < 5:
                await asyncio.sleep(0.05)
        assert _pids_alive(pids) == pids
        driver.kill("victim")
        status = await rec.wait_terminal("victim")
        assert status.state is TaskState.KILLED
        assert any(u.state is TaskState.KILLING for u in rec.updates if u.task_id == "victim")
        assert _pids_alive(pids) == []


async def test_task_over_its_memory_limit_is_killed_and_reported(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        hog = ("python3", "-c", "b = bytearray(300 * 1024 * 1024); print(len(b))")
        driver.launch(offer, [Task("hog", hog, Resources.of(cpus=0.1, mem=64))])
        status = await rec.wait_terminal("hog")
        assert status.state is TaskState.FAILED
        assert status.reason == "CONTAINER_LIMITATION_MEMORY"
        assert status.signal == signal.SIGKILL
        assert "64" in status.message
        assert status.limit == 64 * 1024 * 1024


async def test_declined_offer_is_refused_to_that_framework_but_offered_to_another(
    tmp_path: Path,
) -> None:
    from corral.testing import local_cluster

    async with (
        local_cluster(tmp_path, agents=1) as cluster,
        framework(cluster.master_address, "a") as (driver_a, rec_a),
    ):
        offer = await rec_a.next_offer()
        driver_a.decline(offer, refuse_s=30)
        async with framework(cluster.master_address, "b") as (_driver_b, rec_b):
            offer_b = await rec_b.next_offer(timeout=5)
            assert offer_b.agent_id == offer.agent_id
            # Allocation runs every 50 ms here: 1.5 s is 30 chances to re-offer.
            with pytest.raises(TimeoutError):
                await rec_a.next_offer(timeout=1.5)


async def test_decline_with_zero_refuse_is_offered_again(tmp_path: Path) -> None:
    from corral.testing import local_cluster

    async with (
        local_cluster(tmp_path, agents=1) as cluster,
        framework(cluster.master_address) as (driver, rec),
    ):
        offer = await rec.next_offer()
        driver.decline(offer, refuse_s=0)
        again = await rec.next_offer(timeout=5)
        assert again.agent_id == offer.agent_id
        assert again.id != offer.id


def _run_of(cluster: LocalCluster, task_id: str) -> tuple[Agent, TaskRun]:
    for agent in cluster.agent_list:
        for (_, tid), run in agent.tasks.items():
            if tid == task_id:
                return agent, run
    raise AssertionError(f"no agent runs {task_id}")


async def test_task_isolation_options_reach_the_container(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        cmd = (
            "echo pid=$$ host=$(hostname) uid=$(id -u):$(id -g) "
            "nets=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,); "
            "echo written > out"
        )
        task = Task("iso", cmd, SMALL, network="none", user=(65534, 65534), hostname="box-1")
        driver.launch(offer, [task])
        status = await rec.wait_terminal("iso")
        assert status.state is TaskState.FINISHED, status
        async with asyncio.timeout(10):  # the agent files it once the ack is back
            while (run := _done_run_of(cluster, "iso")) is None:
                await asyncio.sleep(0.02)
        stdout = (run / "stdout").read_text()
        assert "pid=2 " in stdout  # PID 1 is the container's init
        assert "host=box-1 " in stdout
        assert "uid=65534:65534 " in stdout
        assert "nets=lo," in stdout
        assert (run / "out").read_text() == "written\n"  # the sandbox is the task's


async def test_unsupported_container_options_are_task_errors(cluster: LocalCluster) -> None:
    from corral.proto import messages_pb2 as pb

    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        info = Task("bridge", "true", SMALL).to_proto(offer.agent_id)
        info.container.network = pb.ContainerInfo.BRIDGE
        info.container.hostname = "not a hostname"
        from corral.proto import scheduler_pb2

        op = scheduler_pb2.Operation(
            type=scheduler_pb2.Operation.LAUNCH, launch=scheduler_pb2.Operation.Launch(task_infos=[info])
        )
        driver.accept_raw(scheduler_pb2.Call.Accept(offer_ids=[offer.id], operations=[op]))
        status = await rec.wait_terminal("bridge")
        assert status.state is TaskState.ERROR
        assert "container.network: BRIDGE is not supported yet" in status.message
        assert "container.hostname" in status.message


def _done_run_of(cluster: LocalCluster, task_id: str) -> Path | None:
    """The sandbox of a finished task, once its agent has filed it."""
    for agent in cluster.agent_list:
        for (_, tid), sandbox in agent.completed.items():
            if tid == task_id:
                return sandbox
    return None


async def test_task_over_its_disk_is_failed_with_the_disk_reason(cluster: LocalCluster) -> None:
    for agent in cluster.agent_list:
        agent.containerizer.disk_watch_interval_s = 0.05
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        writer = "head -c 6291456 /dev/zero > big; sleep 60"
        driver.launch(offer, [Task("filler", writer, Resources.of(cpus=0.1, mem=32, disk=2))])
        status = await rec.wait_terminal("filler")
        assert status.state is TaskState.FAILED
        assert status.reason == "CONTAINER_LIMITATION_DISK"
        assert status.limit == 2 * 1024 * 1024
        assert "disk limit 2.0 MiB exceeded" in status.message


async def test_a_fork_bomb_is_bounded_by_the_agents_pids_limit(cluster: LocalCluster) -> None:
    assert cluster.agent_list[0].config.task_pids_max == 4096  # the default
    for agent in cluster.agent_list:
        agent.config.task_pids_max = 64  # smaller, so the test stays cheap
    async with framework(cluster.master_address) as (driver, rec):
        offer = await rec.next_offer()
        # Forks until refused, then fails: the limit, not the host, stops it.
        bomb = "for i in $(seq 1000); do sleep 60 & done; wait"
        driver.launch(offer, [Task("bomb", bomb, Resources.of(cpus=0.1, mem=256))])
        status = await rec.wait_terminal("bomb", timeout=30)
        assert status.state is TaskState.FAILED
        assert status.reason == "CONTAINER_LIMITATION_PIDS"
        assert "pids limit 64 reached" in status.message
        # One that ends 0 after refused forks is FINISHED, and still told of the limit.
        offer = await rec.next_offer()
        tolerant = (
            "python3 -c 'import os, time\nfor _ in range(100):\n"
            " try:\n  os.fork() or (time.sleep(60), os._exit(0))\n except OSError: pass'"
        )
        driver.launch(offer, [Task("tolerant", tolerant, Resources.of(cpus=0.1, mem=256))])
        status = await rec.wait_terminal("tolerant", timeout=30)
        assert status.state is TaskState.FINISHED
        assert status.reason == "CONTAINER_LIMITATION_PIDS"
        assert re.search(r"pids limit 64 reached; \d+ forks refused", status.message), status.message


async def test_unconfined_seccomp_and_devices_only_where_the_agent_allows_them(cluster: LocalCluster) -> None:
    async with framework(cluster.master_address) as (driver, rec):
        seccomp = "grep Seccomp: /proc/self/status"
        tasks = [
            Task("unconfined", seccomp, Resources.of(cpus=0.1, mem=32), seccomp_profile="unconfined"),
            Task("kvm", "true", Resources.of(cpus=0.1, mem=32), devices=("/dev/kvm",)),
            Task("lax", "true", Resources.of(cpus=0.1, mem=32), seccomp_profile="lax"),
        ]
        driver.launch(await rec.next_offer(), tasks)
        for task_id, says in (
            ("unconfined", "--allow-unconfined-seccomp"),
            ("kvm", "--allowed-devices: none"),
            ("lax", "'lax' is not allowed here (allowed: default)"),
        ):
            status = await rec.wait_terminal(task_id)
            assert status.state is TaskState.FAILED
            assert status.reason == "CONTAINER_LAUNCH_FAILED"
            assert says in status.message
        for agent in cluster.agent_list:
            agent.config.allow_unconfined_seccomp = True
        driver.launch(await rec.next_offer(), [dataclasses.replace(tasks[0], task_id="unconfined-2")])
        status = await rec.wait_terminal("unconfined-2")
        assert status.state is TaskState.FINISHED
        _, run = _run_of(cluster, "unconfined-2")
        assert (run.sandbox / "stdout").read_text().split() == ["Seccomp:", "0"]
