"""An agent whose work disk is full: nothing launches that a restart could not
find again, the framework is told why, and the agent carries on when there is
room again. The disk is a real (tiny) tmpfs."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.frameworks import Task, TaskState
from corral.master.server import MasterServer
from corral.resources import Resources
from corral.slave.agent import Agent, AgentConfig
from corral.testing import FAST_MASTER, framework
from corral.testing_zookeeper import free_port

pytestmark = [pytest.mark.root]


@contextlib.contextmanager
def tiny_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Write until the disk is full (bounded by its size); returns the filler."""
    filler = path / "filler"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as f:
        for _ in range(10_000):
            try:
                f.write(block)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
    # Smaller writes too: what a tmpfs page leaves free would take a journal line.
    with open(filler, "ab", buffering=0) as f:
        for _ in range(100):
            try:
                f.write(b"\0" * 512)
            except OSError:
                break
    return filler


async def test_a_full_work_disk_drops_launches_with_the_reason_and_recovers(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    server = MasterServer(address, FAST_MASTER)
    await server.start()
    with tiny_disk(tmp_path / "disk", "4m") as disk:
        agent = Agent(
            AgentConfig(
                master=address,
                work_dir=disk / "agent",
                resources=Resources.parse("cpus:2;mem:1024"),
                cgroup_prefix="corral-test-disk-full",
            )
        )
        await agent.start()
        try:
            async with framework(address) as (driver, rec):
                offer = await rec.next_offer()
                filler = fill(disk)
                small = Resources.of(cpus=0.1, mem=32)
                driver.launch(offer, [Task("full", "echo hi", small)])
                status = await rec.wait_terminal("full")
                assert status.state is TaskState.DROPPED, status
                assert "could not checkpoint" in status.message
                assert "No space left on device" in status.message
                assert agent.checkpoint_failures >= 1
                assert "No space left on device" in agent.checkpoint_error

                os.unlink(filler)  # room again
                driver.launch(await rec.next_offer(), [Task("room", "echo hi", small)])
                assert (await rec.wait_terminal("room")).state is TaskState.FINISHED
            # The journal is whole: a restarted agent reads it.
            await agent.stop()
            assert [t.info.task_id for t in agent.checkpoints.load().tasks] == ["room"]
        finally:
            await agent.stop()
            await server.stop()
