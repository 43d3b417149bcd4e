"""The service framework against a real cluster: three instances, one per
host, HTTP-checked by their agents; an agent dies and its instance is
replaced elsewhere; a rolling update to a broken version rolls back without
healthy instances ever dropping below instances - max_unavailable; scale
up/down; removal; the CLI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks.service.service import ServiceFramework
from corral.testing import eventually, local_cluster
from corral.testing import run_corral as cli

pytestmark = [pytest.mark.root]

WEB: dict[str, Any] = {
    "name": "web",
    "instances": 3,
    # python3 from PATH, not sys.executable: a venv under /tmp is hidden by the
    # container's private /tmp.
    "command": "exec python3 -m http.server $PORT0 --bind 127.0.0.1",
    "cpus": 0.1,
    "mem": 64,
    "ports": 1,
    "constraints": ["unique hostname"],
    "health_check": {
        "type": "http",
        "path": "/",
        "interval_s": 0.2,
        "timeout_s": 1,
        "grace_period_s": 3,
        "consecutive_failures": 2,
    },
    "restart": {"backoff_s": 0.1, "backoff_max_s": 1},
    "update": {"max_unavailable": 1, "max_surge": 0, "rollback_after_failures": 2},
}


@pytest.fixture
async def cluster4(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    # Resources detected per agent: each gets its own slice of the port range
    # (they share the host network, so equal ranges would collide).
    async with local_cluster(tmp_path / "cluster", agents=4, agent_resources=None) as cluster:
        yield cluster


@pytest.fixture
async def services(cluster4: LocalCluster, tmp_path: Path) -> AsyncIterator[ServiceFramework]:
    fw = ServiceFramework(cluster4.master_address, tmp_path / "service.db", record=False)
    await fw.start()
    try:
        yield fw
    finally:
        await fw.stop()


def _agents(fw: ServiceFramework, name: str) -> set[str]:
    return {i.agent_id for i in fw.engine.live(name) if fw.engine.is_healthy(i)}


async def test_replace_roll_back_scale_and_remove(cluster4: LocalCluster, services: ServiceFramework) -> None:
    engine = services.engine
    assert engine.deploy(WEB)["result"] == "created"
    await eventually(
        lambda: engine.services["web"].state == "RUNNING" and engine.healthy_count("web") == 3,
        30,
        "3 healthy instances",
    )
    agents = _agents(services, "web")
    assert len(agents) == 3, "one instance per host"

    # Kill an agent: its instance is replaced on the fourth one.
    victim = next(a for a in cluster4.agent_list if a.agent_id in agents)
    spare = next(a for a in cluster4.agent_list if a.agent_id not in agents)
    await victim.stop()
    await eventually(
        lambda: engine.healthy_count("web") == 3 and spare.agent_id in _agents(services, "web"),
        30,
        "a replacement on the spare agent",
    )
    assert victim.agent_id not in _agents(services, "web")
    assert len(_agents(services, "web")) == 3

    # A broken version: nothing listens, so its health check fails; it rolls back.
    healthy_seen: list[int] = []

    async def record() -> None:
        while True:
            healthy_seen.append(engine.healthy_count("web"))
            await asyncio.sleep(0.02)

    recorder = asyncio.create_task(record())
    try:
        broken = {**WEB, "command": "exec sleep 600"}
        assert engine.deploy(broken) == {"name": "web", "version": 2, "result": "updated"}
        await eventually(lambda: engine.services["web"].state == "ROLLING_BACK", 30, "the rollback to start")
        await eventually(
            lambda: engine.services["web"].state == "RUNNING" and engine.healthy_count("web") == 3,
            30,
            "the rollback to finish",
        )
    finally:
        recorder.cancel()
    svc = engine.services["web"]
    assert svc.version == 1
    assert svc.message == "rolled back to v1"
    v2 = [i for i in engine.instances.values() if i.version == 2]
    assert len(v2) >= 2, "v2 was tried"
    assert all(i.ended_at for i in v2), "no v2 instance left running"
    assert any("TASK_UNHEALTHY" in i.message for i in v2), [i.message for i in v2]
    assert min(healthy_seen) >= 2, f"healthy fell below instances - max_unavailable: {min(healthy_seen)}"
    assert len(healthy_seen) > 50

    # Scale down and up.
    engine.scale("web", 1)
    await eventually(lambda: len(engine.active("web")) == 1, 20, "scale down to 1")
    engine.scale("web", 3)
    await eventually(lambda: engine.healthy_count("web") == 3, 30, "scale back up to 3")
    assert len(_agents(services, "web")) == 3

    engine.remove("web")
    await eventually(lambda: "web" not in engine.services, 20, "the service to be removed")


async def test_cli_deploy_list_status_scale_rm(cluster: LocalCluster, tmp_path: Path) -> None:
    fw = ServiceFramework(cluster.master_address, tmp_path / "service.db", record=False)
    addr = await fw.start()
    try:
        bad = tmp_path / "bad.toml"
        bad.write_text('name = "s"\ncommand = "sleep 60"\n\n[update]\nmax_surge = 1\nmax_unavaliable = 0\n')
        code, out = await cli("service", "deploy", str(bad), "--service", addr)
        assert code != 0
        assert "bad.toml:6: update: unknown key(s) ['max_unavaliable']" in " ".join(out.split())

        good = tmp_path / "sleepy.toml"
        good.write_text('command = "sleep 60"\ninstances = 2\n')
        code, out = await cli("service", "deploy", str(good), "--service", addr)
        assert code == 0, out
        assert "sleepy" in out
        await eventually(lambda: fw.engine.healthy_count("sleepy") == 2, 20, "2 instances")
        code, out = await cli("service", "list", "--service", addr)
        assert code == 0, out
        assert "sleepy" in out
        assert "RUNNING" in out
        code, out = await cli("service", "scale", "sleepy", "1", "--service", addr)
        assert code == 0, out
        await eventually(lambda: len(fw.engine.active("sleepy")) == 1, 20, "scale down")
        code, out = await cli("service", "status", "sleepy", "--service", addr)
        assert code == 0, out
        assert "sleepy.1.v1" in out or "sleepy.2.v1" in out
        code, out = await cli("service", "status", "nope", "--service", addr)
        assert code != 0
        assert "no service named 'nope'" in out
        code, out = await cli("service", "rm", "sleepy", "--service", addr)
        assert code == 0, out
        await eventually(lambda: "sleepy" not in fw.engine.services, 20, "removal")
    finally:
        await fw.stop()


async def test_a_restarted_framework_keeps_its_instances(cluster: LocalCluster, tmp_path: Path) -> None:
    db = tmp_path / "service.db"
    fw = ServiceFramework(cluster.master_address, db, record=False)
    await fw.start()
    try:
        fw.engine.deploy({"name": "keep", "command": "sleep 600", "instances": 2})
        await eventually(lambda: fw.engine.healthy_count("keep") == 2, 20, "2 instances")
        before = {i.id for i in fw.engine.active("keep")}
    finally:
        await fw.stop()  # the master keeps the tasks for the failover timeout
    again = ServiceFramework(cluster.master_address, db, record=False)
    await again.start()
    try:
        await eventually(
            lambda: again.driver is not None and again.driver.connected.is_set(), 20, "resubscribed"
        )
        assert again.engine.services["keep"].state == "RUNNING"
        # Reconciled, not relaunched: the same two tasks, still running.
        await eventually(
            lambda: {i.id for i in again.engine.active("keep") if i.state == "RUNNING"} == before,
            20,
            "the same instances after reconciliation",
        )
        assert again.engine.services["keep"].next_seq == 2, "nothing was launched again"
        again.engine.remove("keep")
        await eventually(lambda: "keep" not in again.engine.services, 20, "removal")
    finally:
        await again.stop()
