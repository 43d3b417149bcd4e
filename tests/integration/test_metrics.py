"""Prometheus metrics over real HTTP on loopback, from a real master and agent."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from corral import __version__
from corral.cli.local import LocalCluster
from corral.frameworks import Task, TaskState
from corral.master.server import MasterServer
from corral.metrics import MetricsServer, process_registry
from corral.resources import Resources
from corral.slave import metrics as agent_metrics
from corral.slave.agent import Agent, AgentConfig
from corral.testing import FAST_MASTER, eventually, framework
from corral.testing_zookeeper import free_port

pytestmark = [pytest.mark.root]

MIB = 1024 * 1024
LOCAL = [sys.executable, "-m", "corral.cli.main", "local", "--insecure", "--port", "0", "-n", "1"]


def _get(url: str, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _get_openmetrics(url: str) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


async def test_master_and_agent_metrics_follow_a_task(
    tmp_path: Path, promtool: Callable[[str], None]
) -> None:
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
    agent_server = MetricsServer("127.0.0.1:0", agent_metrics.registry([agent], __version__))
    await agent_server.start()
    agent_url = f"http://{agent_server.address}/metrics"
    try:
        async with framework(address) as (driver, rec):
            driver.launch(await rec.next_offer(), [Task("t", "sleep 300", Resources.of(cpus=0.5, mem=64))])
            await rec.wait_state("t", TaskState.RUNNING)
            status, text = await asyncio.to_thread(_get, master_url)
            assert status == 200
            promtool(text)
            m = _samples(text)
            assert m["corral_master_leading"] == 1
            assert m[f'corral_master_info{{version="{__version__}"}}'] == 1
            assert m['corral_master_agents{state="connected"}'] == 1
            assert m['corral_master_tasks{state="TASK_RUNNING"}'] == 1
            assert m['corral_master_cpus{kind="total"}'] == 2
            assert m['corral_master_cpus{kind="used"}'] == 0.5
            assert m['corral_master_memory_bytes{kind="total"}'] == 1024 * MIB
            assert m["corral_master_tasks_launched_total"] == 1
            assert m["corral_master_allocation_runs_total"] >= 1
            assert m["corral_master_allocation_cycle_seconds_count"] >= 1
            # The task ran: its launch was timed, between the ACCEPT and now.
            assert m["corral_master_task_launch_seconds_count"] == 1
            assert 0 < m["corral_master_task_launch_seconds_sum"] < 30
            assert m["process_resident_memory_bytes"] > 0

            status, text = await asyncio.to_thread(_get, agent_url)
            assert status == 200
            promtool(text)
            a = _samples(text)
            assert a["corral_agent_registered"] == 1
            assert a['corral_agent_tasks{state="TASK_RUNNING"}'] == 1
            assert a["corral_agent_containers"] == 1
            assert a["corral_agent_disk_bytes"] == 512 * MIB
            assert a["process_open_fds"] > 0

            driver.kill("t")
            await rec.wait_state("t", TaskState.KILLED)

            async def ended() -> bool:
                _, text = await asyncio.to_thread(_get, master_url)
                return _samples(text).get('corral_master_tasks_ended_total{state="TASK_KILLED"}') == 1

            await eventually_async(ended, 10, "the master to count the killed task as ended")
            await eventually(lambda: not agent.tasks, 10, "the agent to forget the task")
            # Every update of the task was acknowledged: each round trip observed.
            _, text = await asyncio.to_thread(_get, agent_url)
            a = _samples(text)
            assert a["corral_agent_status_update_round_trip_seconds_count"] >= 3  # STARTING, RUNNING, KILLED
            assert (
                a['corral_agent_status_update_round_trip_seconds_bucket{le="+Inf"}']
                == (a["corral_agent_status_update_round_trip_seconds_count"])
            )

        # OpenMetrics when the scraper asks for it (as Prometheus does).
        content_type, body = await asyncio.to_thread(_get_openmetrics, master_url)
        assert content_type.startswith("application/openmetrics-text")
        assert body.endswith("# EOF\n")

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


async def eventually_async(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_local_cluster_serves_its_master_and_agents_on_one_endpoint(
    tmp_path: Path, promtool: Callable[[str], None]
) -> None:
    cluster = LocalCluster(
        agents=2,
        work_dir=tmp_path,
        agent_resources=Resources.parse("cpus:1;mem:256"),
        master_config=FAST_MASTER,
        cgroup_prefix="corral-test-local-metrics",
        metrics_listen="127.0.0.1:0",
    )
    try:
        await cluster.start()
        assert cluster.metrics is not None
        status, text = await asyncio.to_thread(_get, f"http://{cluster.metrics.address}/metrics")
        assert status == 200
        promtool(text)
        m = _samples(text)
        assert m['corral_master_agents{state="connected"}'] == 2
        for agent in cluster.agent_list:
            assert m[f'corral_agent_registered{{agent_id="{agent.agent_id}"}}'] == 1
            assert m[f'corral_agent_memory_bytes{{agent_id="{agent.agent_id}"}}'] == 256 * MIB
        assert sum(1 for line in text.splitlines() if line.startswith("process_cpu_seconds_total")) == 1
    finally:
        await cluster.stop()


def test_corral_local_metrics_listen_from_the_command_line(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "HOME": str(tmp_path)}
    command = [*LOCAL, "--no-batch", "--no-services", "--agent-resources", "cpus:1;mem:256"]
    command += ["--work-dir", str(tmp_path / "local"), "--metrics-listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, text = _get(f"http://127.0.0.1:{port}/metrics")
                if status == 200 and "corral_agent_registered 1.0" in text:
                    break
            except OSError:
                pass
            assert proc.poll() is None, f"corral local exited: {proc.communicate()[0]}"
            assert time.monotonic() < deadline, "corral local never served its metrics"
            time.sleep(0.2)
        assert "corral_master_leading 1.0" in text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert f"metrics at http://127.0.0.1:{port}/metrics" in out


def test_corral_local_refuses_a_bad_metrics_address(tmp_path: Path) -> None:
    done = subprocess.run(
        [*LOCAL, "--work-dir", str(tmp_path / "local"), "--metrics-listen", "nonsense"],
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "metrics listen address: expected HOST:PORT, got 'nonsense'" in done.stderr + done.stdout


async def test_garbage_and_oversized_requests_are_refused() -> None:
    server = MetricsServer("127.0.0.1:0", CollectorRegistry())
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
    server = MetricsServer("127.0.0.1:0", process_registry())
    await server.start()
    host, port = server.address.rsplit(":", 1)
    idle = []
    try:
        for _ in range(40):  # send nothing: each would hold a slot for the request timeout
            idle.append(await asyncio.open_connection(host, int(port)))
        await asyncio.sleep(0.2)
        assert server.open_connections <= 32
    finally:
        for _, writer in idle:
            writer.close()
    await eventually(lambda: server.open_connections == 0, 10, "the idle connections to go")
    status, text = await asyncio.to_thread(_get, f"http://{server.address}/metrics")
    assert status == 200
    assert "process_open_fds" in text
    await server.stop()
