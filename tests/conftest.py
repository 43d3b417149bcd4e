"""Shared fixtures. Importing corral first turns off grpc's fork handlers
(see corral/__init__.py) before any test imports grpc."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import corral  # noqa: F401  (sets GRPC_ENABLE_FORK_SUPPORT=0 before grpc loads)
from corral import testing_zookeeper as zkserver
from corral.cli.local import LocalCluster
from corral.testing import local_cluster
from corral.testing_zookeeper import ZooKeeperServer

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IS_ROOT:
        return
    skip = pytest.mark.skip(reason="needs root (cgroups, namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    """A real in-process master with two agents (cpus:2;mem:2048 each)."""
    async with local_cluster(tmp_path / "cluster", agents=2) as c:
        yield c
    # Every test cleans up the cgroups it made, even when it fails.
    leftovers = [str(d) for d in c.agent_list[0].containerizer.cgroups.dirs(c.cgroup_prefix) if d.exists()]
    assert leftovers == [], f"cgroups left behind: {leftovers}"


@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """One real ZooKeeper server for the session; tests use their own paths."""
    reason = zkserver.available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide ZooKeeper: {reason}")
        pytest.skip(reason)
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zk_url(zookeeper: ZooKeeperServer) -> str:
    """A fresh cluster path on the shared server."""
    return f"zk://{zookeeper.hosts}/corral-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def promtool() -> Callable[[str], None]:
    """``check(text)``: ``promtool check metrics`` must accept ``text`` (the
    Debian package ``prometheus``; .ci/run installs it, so CI never skips)."""
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide promtool (the Debian package prometheus)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")

    def check(text: str) -> None:
        done = subprocess.run(
            [path, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"promtool check metrics: {done.stdout}{done.stderr}"

    return check
