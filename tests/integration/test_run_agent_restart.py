"""`corral run` (corral/cli/jobs.py) across a restart of its task's agent:
the output goes on streaming from where it was and the exit code is the
task's, not "the agent is not connected" (issue 18)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.cli.jobs import exit_code_of, follow_output, run_job
from corral.frameworks.batch.spec import parse_job
from corral.master.server import MasterServer
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.testing import FAST_MASTER, eventually
from corral.testing_zookeeper import free_port
from corral.transport import Credentials

pytestmark = [pytest.mark.root]


def _agent(address: str, work_dir: Path) -> Agent:
    return Agent(
        AgentConfig(
            master=address,
            work_dir=work_dir,
            resources=Resources.parse("cpus:1;mem:1024"),
            cgroup_prefix="corral-test-run-restart",
        )
    )


async def test_run_keeps_streaming_across_an_agent_restart_and_exits_with_the_tasks_code(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    agent = _agent(address, tmp_path / "agent")
    await agent.start()
    spec = parse_job(
        {
            "name": "r",
            "tasks": [
                {
                    "name": "r",
                    "cpus": 0.1,
                    "mem": 32,
                    # Waits for the test to say the agent came back, then ends.
                    "command": "echo before; while ! test -e go; do sleep 0.1; done; echo after; exit 42",
                }
            ],
        }
    )
    creds = Credentials(claim="operator:test")
    try:
        run = asyncio.ensure_future(
            run_job(
                address,
                spec,
                framework_name="corral-run",
                while_running=follow_output(address, lambda job_id: f"{job_id}.r.0", creds),
                credentials=creds,
            )
        )
        seen = b""

        def printed(what: bytes) -> bool:
            nonlocal seen
            seen += capfdbinary.readouterr().out
            return what in seen

        await eventually(lambda: printed(b"before"), 30, "the task's first line")
        (sandbox,) = [run.sandbox for run in agent.tasks.values()]
        # The agent process goes away (its task runs on) and a new one takes over.
        await agent.stop(kill_tasks=False)
        await asyncio.sleep(1.0)  # the stream sees the agent gone meanwhile
        assert not run.done(), "corral run gave up while the agent was away"
        agent = _agent(address, tmp_path / "agent")
        await agent.start()
        await eventually(agent.registered.is_set, 30, "the new agent registers")
        (sandbox / "go").touch()  # in the task's sandbox, its working directory
        async with asyncio.timeout(60):
            result = await run
        seen += capfdbinary.readouterr().out
        assert exit_code_of(result.progress[0]) == 42, result.progress[0].status
        assert seen.count(b"before") == 1, seen
        assert b"after" in seen, seen
    finally:
        await agent.stop()
        await server.stop()
