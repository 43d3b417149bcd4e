"""Prometheus metrics over real HTTP on loopback, from a real master and agent."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from corral import __version__
from corral.frameworks import Task, TaskState
from corral.master.server import MasterServer
from corral.metrics import Metric, MetricsServer
from corral.resources import Resources
from corral.slave import metrics as agent_metrics
from corral.slave.agent import Agent, AgentConfig
from corral.testing import FAST_MASTER, eventually, framework
from corral.testing_zookeeper import free_port

pytestmark = [pytest.mark.root]


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_master_and_agent_metrics_follow_a_task(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER, metrics_listen="127.0.0.1:0")
    await server.start()
    assert server.metrics is not None
    master_url = f"http://{server.metrics.address}/metrics"
    agent = Agent(
        AgentConfig(
            master=address,
            work_dir=tmp_path / "agent",
            resources=Resources.parse("cpus:2;mem:1024;disk:512"),
            cgroup_prefix="corral-test-metrics",
        )
    )
    await agent.start()
    agent_server = MetricsServer("127.0.0.1:0", lambda: agent_metrics.collect(agent, __version__))
    await agent_server.start()
    try:
        async with framework(address) as (driver, rec):
            driver.launch(await rec.next_offer(), [Task("t", "sleep 300", Resources.of(cpus=0.5, mem=64))])
            await rec.wait_state("t", TaskState.RUNNING)
            status, text = await asyncio.to_thread(_get, master_url)
            assert status == 200
            m = _samples(text)
            assert m["corral_master_leading"] == 1
            assert m[f'corral_master_info{{version="{__version__}"}}'] == 1
            assert m['corral_master_agents{state="connected"}'] == 1
            assert m['corral_master_tasks{state="TASK_RUNNING"}'] == 1
            assert m['corral_master_resources{kind="total",resource="cpus"}'] == 2
            assert m['corral_master_resources{kind="used",resource="cpus"}'] == 0.5
            assert m['corral_master_resources{kind="total",resource="mem"}'] == 1024
            assert m["corral_master_tasks_launched_total"] == 1
            assert m["corral_master_allocation_runs_total"] >= 1

            status, text = await asyncio.to_thread(_get, f"http://{agent_server.address}/metrics")
            assert status == 200
            a = _samples(text)
            assert a["corral_agent_registered"] == 1
            assert a['corral_agent_tasks{state="TASK_RUNNING"}'] == 1
            assert a["corral_agent_containers"] == 1
            assert a['corral_agent_resources{resource="disk"}'] == 512

            driver.kill("t")
            await rec.wait_state("t", TaskState.KILLED)

            async def ended() -> bool:
                _, text = await asyncio.to_thread(_get, master_url)
                return _samples(text).get('corral_master_tasks_ended_total{state="TASK_KILLED"}') == 1

            for _ in range(100):  # the ack reaches the master a moment after the update
                if await ended():
                    break
                await asyncio.sleep(0.05)
            assert await ended()
            await eventually(lambda: not agent.tasks, 10, "the agent to forget the task")

        # Anything but GET /metrics or /health gets a clear refusal, and the server carries on.
        base = f"http://{server.metrics.address}"
        assert await asyncio.to_thread(_get, f"{base}/health") == (200, "ok\n")
        assert (await asyncio.to_thread(_get, f"{base}/nope"))[0] == 404
        assert (await asyncio.to_thread(_get, f"{base}/metrics", "POST"))[0] == 405
        assert (await asyncio.to_thread(_get, master_url))[0] == 200
    finally:
        await agent_server.stop()
        await agent.stop()
        await server.stop()


async def test_a_standby_master_reports_only_that_it_does_not_lead() -> None:
    from corral.master import metrics as master_metrics
    from corral.metrics import render

    text = render(master_metrics.collect(None, __version__))
    assert _samples(text) == {"corral_master_leading": 0, f'corral_master_info{{version="{__version__}"}}': 1}


async def test_garbage_and_oversized_requests_are_refused() -> None:
    server = MetricsServer("127.0.0.1:0", lambda: [])
    await server.start()
    try:
        host, port = server.address.rsplit(":", 1)
        for payload in (
            b"\x00\xff garbage\r\n\r\n",
            b"GET /metrics HTTP/1.0\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(payload)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert answer.split(b"\r\n", 1)[0] in (
                b"HTTP/1.0 400 Bad Request",
                b"HTTP/1.0 405 Method Not Allowed",
            )
    finally:
        await server.stop()


async def test_idle_connections_are_capped_and_scrapes_work_once_they_go() -> None:
    server = MetricsServer("127.0.0.1:0", lambda: [Metric("up", "Up.").add(1)])
    await server.start()
    host, port = server.address.rsplit(":", 1)
    idle = []
    try:
        for _ in range(40):  # send nothing: each would hold a slot for the request timeout
            idle.append(await asyncio.open_connection(host, int(port)))
        await asyncio.sleep(0.2)
        assert server._open <= 32
    finally:
        for _, writer in idle:
            writer.close()
    await eventually(lambda: server._open == 0, 10, "the idle connections to go")
    status, text = await asyncio.to_thread(_get, f"http://{server.address}/metrics")
    assert status == 200
    assert "up 1" in text
    await server.stop()
