"""Health checks run by a real agent: RUNNING updates carry `healthy`, a task
that keeps failing is killed with REASON_TASK_UNHEALTHY, and a bad check is
refused by the master naming the field."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks import HealthCheck, Task, TaskState
from corral.master.server import MasterServer
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.testing import FAST_MASTER, framework
from corral.testing_zookeeper import free_port

pytestmark = [pytest.mark.root]
SMALL = Resources.of(cpus=0.1, mem=32)


async def test_healthy_then_unhealthy_task_is_killed(cluster: LocalCluster) -> None:
    # Healthy while the file exists; the task removes it after a while.
    check = HealthCheck(
        "command", command="test -f alive", interval_s=0.2, grace_period_s=0.1, consecutive_failures=2
    )
    task = Task("svc", "touch alive; sleep 1; rm alive; sleep 60", SMALL, health_check=check)
    async with framework(cluster.master_address) as (driver, rec):
        driver.launch(await rec.next_offer(), [task], refuse_s=0)
        await rec.wait_for(
            lambda: any(u.task_id == "svc" and u.healthy is True for u in rec.updates), 10, "a healthy update"
        )
        end = await rec.wait_terminal("svc", timeout=15)
        assert end.state is TaskState.KILLED, end
        assert end.reason == "TASK_UNHEALTHY", end
        assert "health check failed 2 times in a row" in end.message
        healthy = [u.healthy for u in rec.updates if u.task_id == "svc" and u.state is TaskState.RUNNING]
        assert healthy[-2:] == [True, False], healthy
        unhealthy = next(u for u in rec.updates if u.healthy is False)
        assert unhealthy.reason == "TASK_HEALTH_CHECK_STATUS_UPDATED"


async def test_tcp_check_in_the_tasks_own_network_namespace(cluster: LocalCluster) -> None:
    # network "none": the task's 127.0.0.1 is not the host's; the check must look there.
    listen = (
        "python3 -c 'import socket,time; s=socket.socket(); "
        's.bind(("127.0.0.1", 31555)); s.listen(); time.sleep(60)\''
    )
    check = HealthCheck("tcp", port=31555, interval_s=0.2, grace_period_s=5)
    task = Task("netns", listen, SMALL, network="none", health_check=check)
    async with framework(cluster.master_address) as (driver, rec):
        driver.launch(await rec.next_offer(), [task], refuse_s=0)
        await rec.wait_for(
            lambda: any(u.task_id == "netns" and u.healthy is True for u in rec.updates), 10, "healthy"
        )
        driver.kill("netns")
        end = await rec.wait_terminal("netns")
        assert end.reason == "TASK_KILLED_BY_REQUEST"


async def test_master_refuses_a_bad_health_check(cluster: LocalCluster) -> None:
    task = Task("bad", "sleep 1", SMALL, health_check=HealthCheck("tcp", port=0))
    async with framework(cluster.master_address) as (driver, rec):
        driver.launch(await rec.next_offer(), [task], refuse_s=0)
        end = await rec.wait_terminal("bad")
        assert end.state in (TaskState.ERROR, TaskState.DROPPED), end
        assert "health_check.port: must be 1-65535" in end.message


async def test_a_reattached_task_is_checked_again(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()

    def make() -> Agent:
        return Agent(
            AgentConfig(
                master=address,
                work_dir=tmp_path / "agent",
                resources=Resources.parse("cpus:2;mem:1024"),
                cgroup_prefix="corral-test-health-recovery",
            )
        )

    agent = make()
    await agent.start()
    try:
        # Healthy while "alive" exists in the sandbox; the test removes it after the restart.
        check = HealthCheck("command", command="test -f alive", interval_s=0.2, consecutive_failures=2)
        task = Task("svc", "touch alive; sleep 300", SMALL, health_check=check)
        async with framework(address, failover_timeout_s=30) as (driver, rec):
            driver.launch(await rec.next_offer(), [task])
            await rec.wait_for(lambda: any(u.healthy is True for u in rec.updates), 10, "healthy")
            sandbox = agent.tasks[(driver.framework_id, "svc")].sandbox
            await agent.stop(kill_tasks=False)
            agent = make()
            await agent.start()
            await asyncio.wait_for(agent.registered.wait(), 10)
            (sandbox / "alive").unlink()
            end = await rec.wait_terminal("svc", timeout=20)
            assert end.state is TaskState.KILLED, end
            assert end.reason == "TASK_UNHEALTHY", end
    finally:
        await agent.stop()
        await server.stop()


async def test_a_command_check_runs_confined_as_its_task(cluster: LocalCluster) -> None:
    # The security review's attack: a uid-65534 task's check must not run as
    # the agent's root with every capability, unfiltered, outside the task's cgroup.
    record = (
        "{ id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; cat /proc/self/cgroup; } "
        "> check.out.tmp && mv check.out.tmp check.out"
    )
    check = HealthCheck("command", command=record, interval_s=0.2, grace_period_s=5)
    task = Task(
        "confined",
        "cat /proc/self/cgroup > task.cgroup; sleep 60",
        SMALL,
        user=(65534, 65534),
        health_check=check,
    )
    async with framework(cluster.master_address) as (driver, rec):
        driver.launch(await rec.next_offer(), [task], refuse_s=0)
        await rec.wait_for(
            lambda: any(u.task_id == "confined" and u.healthy is True for u in rec.updates), 10, "healthy"
        )
        runs = [a.tasks[k] for a in cluster.agent_list for k in a.tasks if k[1] == "confined"]
        sandbox = runs[0].sandbox
        driver.kill("confined")
        await rec.wait_terminal("confined")
    lines = (sandbox / "check.out").read_text().splitlines()
    assert lines[0] == "65534", lines
    assert "CapEff:\t0000000000000000" in lines, lines
    assert "NoNewPrivs:\t1" in lines, lines
    assert "Seccomp:\t2" in lines, lines
    assert sorted(lines[4:]) == sorted((sandbox / "task.cgroup").read_text().splitlines())
