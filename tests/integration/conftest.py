"""Fixtures of the integration tests that run the batch service on a real cluster."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks.batch.service import BatchService


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory tasks and the test both see (a task's /tmp is its own tmpfs)."""
    path = Path("/var/tmp") / f"corral-test-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def service(cluster: LocalCluster, tmp_path: Path) -> AsyncIterator[BatchService]:
    svc = BatchService(cluster.master_address, tmp_path / "batch.db", record=False)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
