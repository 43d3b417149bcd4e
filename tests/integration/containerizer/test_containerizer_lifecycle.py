"""Pause and resume (freezer), the disk limit and live statistics, on real cgroups (root)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.slave.containerizer import ContainerConfig, ContainerError, Containerizer

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for cgroups"),
]
Make = Callable[..., ContainerConfig]
MiB = 1 << 20

# Appends a line every 10 ms: the file stops growing exactly while frozen.
TICKER = "trap 'exit 0' TERM; while :; do echo t >> ticks; sleep 0.01; done"


def ticks(config: ContainerConfig) -> int:
    try:
        return len((config.sandbox / "ticks").read_bytes())
    except FileNotFoundError:
        return 0


async def grows(config: ContainerConfig, timeout_s: float = 5.0) -> bool:
    before = ticks(config)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        if ticks(config) > before:
            return True
    return False


async def test_pause_freezes_the_container_and_resume_thaws_it(ctz: Containerizer, make_config: Make) -> None:
    config = make_config("/bin/sh", "-c", TICKER)
    await ctz.launch(config)
    assert await grows(config)
    assert ctz.state(config.container_id) == "running"

    await ctz.pause(config.container_id)
    assert ctz.state(config.container_id) == "paused"
    assert (await ctz.usage(config.container_id)).state == "paused"
    frozen_at = ticks(config)
    await asyncio.sleep(0.3)
    assert ticks(config) == frozen_at, "a paused container kept running"
    with pytest.raises(ContainerError, match="cannot be paused: it is paused"):
        await ctz.pause(config.container_id)

    await ctz.resume(config.container_id)
    assert ctz.state(config.container_id) == "running"
    assert await grows(config)
    with pytest.raises(ContainerError, match="cannot be resumed: it is running"):
        await ctz.resume(config.container_id)

    # A paused container can still be killed, and its TERM trap runs.
    await ctz.pause(config.container_id)
    await ctz.kill(config.container_id, grace_s=5.0)
    termination = await ctz.wait(config.container_id)
    assert termination.killed
    assert termination.exit_code == 0, "SIGTERM should have reached the trap after thawing"
    assert ctz.state(config.container_id) == "stopped"
    with pytest.raises(ContainerError, match="cannot be paused: it is stopped"):
        await ctz.pause(config.container_id)
    await ctz.destroy(config.container_id)
    with pytest.raises(ContainerError, match="is not known"):
        await ctz.pause(config.container_id)


async def test_a_sandbox_over_its_disk_limit_ends_the_task(ctz: Containerizer, make_config: Make) -> None:
    ctz.disk_watch_interval_s = 0.05
    config = make_config(
        "/bin/sh", "-c", "head -c 8388608 /dev/zero > big; sync; sleep 30", disk_bytes=4 * MiB
    )
    await ctz.launch(config)
    termination = await asyncio.wait_for(ctz.wait(config.container_id), 15)
    await ctz.destroy(config.container_id)
    assert termination.limitation is not None
    assert termination.limitation.kind == "disk"
    assert termination.limitation.limit == 4 * MiB
    assert termination.limitation.peak >= 8 * MiB
    assert "disk limit 4.0 MiB exceeded: the task wrote" in termination.message


async def test_a_task_within_its_disk_limit_ends_normally(ctz: Containerizer, make_config: Make) -> None:
    ctz.disk_watch_interval_s = 0.05
    config = make_config("/bin/sh", "-c", "head -c 1048576 /dev/zero > small; sleep 0.3", disk_bytes=8 * MiB)
    await ctz.launch(config)
    termination = await asyncio.wait_for(ctz.wait(config.container_id), 15)
    await ctz.destroy(config.container_id)
    assert (termination.exit_code, termination.limitation) == (0, None)


async def test_usage_reports_live_statistics_and_limits(ctz: Containerizer, make_config: Make) -> None:
    ctz.disk_watch_interval_s = 0.05
    config = make_config(
        "/bin/sh",
        "-c",
        "head -c 2097152 /dev/zero > f; while :; do :; done",
        mem_bytes=64 * MiB,
        pids_max=50,
    )
    await ctz.launch(config)
    try:
        for _ in range(100):
            usage = await ctz.usage(config.container_id)
            if usage.cpu_time_s > 0.05 and usage.disk_bytes >= 2 * MiB:
                break
            await asyncio.sleep(0.05)
        assert usage.cpu_time_s > 0.05
        assert usage.disk_bytes >= 2 * MiB
        assert usage.mem_limit_bytes == 64 * MiB
        assert usage.pids_limit == 50
        assert 1 <= usage.pids <= 50
        assert usage.mem_bytes > 0
        assert usage.state == "running"
    finally:
        await ctz.kill(config.container_id, grace_s=0.0)
        await ctz.destroy(config.container_id)


def test_disk_usage_counts_hard_links_once_and_does_not_follow_symlinks(tmp_path: Path) -> None:
    from corral.slave.containerizer.disk import usage_bytes

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "huge").write_bytes(b"x" * (4 * MiB))
    box = tmp_path / "box"
    (box / "sub").mkdir(parents=True)
    (box / "sub" / "a").write_bytes(b"y" * MiB)
    os.link(box / "sub" / "a", box / "b")
    (box / "link").symlink_to(outside)
    used = usage_bytes(box)
    assert MiB <= used < 2 * MiB
    assert usage_bytes(tmp_path / "missing") == 0
