"""The disk isolator: what a container wrote, measured like Mesos' ``disk/du``.

No filesystem quota is assumed, so every ``interval_s`` (the first time after
at most 1 s, so ``usage`` soon has a figure) one dedicated thread measures the
sandbox and, on an image, the overlay's upper layer; over its ``disk_bytes``
the watch returns a limitation and the containerizer kills the task.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import structlog

from corral.slave.containerizer import disk, forensics
from corral.slave.containerizer.isolator import Isolator, Running
from corral.slave.containerizer.model import ContainerConfig, Limitation, Usage

log = structlog.get_logger(__name__)

DISK_WATCH_INTERVAL_S = 15.0  # Mesos' default for its disk/du isolator


def writable_dirs(config: ContainerConfig, meta_dir: Path) -> tuple[Path, ...]:
    """What a task's disk limit covers: its sandbox and, on an image, the overlay's upper layer."""
    return (config.sandbox, meta_dir / "overlay" / "upper")


class DiskIsolator(Isolator):
    name: ClassVar[str] = "disk"

    def __init__(self, interval_s: float = DISK_WATCH_INTERVAL_S) -> None:
        self.interval_s = interval_s  # 0 turns measuring off
        # One thread for every du: a big sandbox delays the next measurement,
        # not the default executor's other users (image imports, cgroup removal).
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-du")
        self._used: dict[str, int] = {}

    def watches(self, config: ContainerConfig) -> bool:
        return self.interval_s > 0

    async def watch(self, container: Running) -> Limitation | None:
        limit = container.config.disk_bytes
        loop = asyncio.get_running_loop()
        wait_s = min(1.0, self.interval_s)
        while True:
            try:
                async with asyncio.timeout(wait_s):
                    await asyncio.shield(container.done)
                return None
            except TimeoutError:
                pass
            wait_s = self.interval_s
            dirs = writable_dirs(container.config, container.meta_dir)
            used = await loop.run_in_executor(self._pool, disk.usage_bytes, *dirs)
            self._used[container.container_id] = used
            if limit is None or used <= limit or container.done.done():
                continue
            log.warning("container.disk_limit", container_id=container.container_id, limit=limit, used=used)
            return Limitation(
                kind="disk",
                message=f"disk limit {forensics.mib(limit)} exceeded: the task wrote {forensics.mib(used)}",
                limit=limit,
                peak=used,
            )

    def usage(self, container: Running, usage: Usage) -> Usage:
        """The last background measurement (0 before the first)."""
        return replace(
            usage,
            disk_bytes=self._used.get(container.container_id, 0),
            disk_limit_bytes=container.config.disk_bytes or 0,
        )

    def cleanup(self, container_id: str) -> None:
        self._used.pop(container_id, None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
