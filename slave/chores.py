"""The agent's disk chores, off its event loop: deleting the sandboxes GC
moved to the trash (slave/gc.py) and, on the minute round, collecting unused
images (slave/containerizer/images/gc.py). One round runs at a time, in a
thread; a round asked for while one runs is skipped (the next one catches
up)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.slave import gc as sandbox_gc
from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.images import gc as image_gc


class Chores:
    def __init__(
        self, work_dir: Path, images: ImageStore, image_gc: bool, image_gc_budget: int | None
    ) -> None:
        self.work_dir = work_dir
        self.images = images
        self.image_gc = image_gc
        self.image_gc_budget = image_gc_budget
        self._round: asyncio.Task[int] | None = None

    def start(self, images: bool = False) -> None:
        """Empty the trash (and with ``images``, collect images) unless a round runs."""
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(asyncio.to_thread(self._run, images), name="agent-chores")

    def _run(self, images: bool) -> int:
        removed = sandbox_gc.empty_trash(self.work_dir)
        if images and self.image_gc:
            image_gc.collect_quietly(self.images, self.image_gc_budget)
        return removed

    async def stop(self) -> None:
        """A thread cannot be cancelled: give it a moment; what it leaves, the
        next start deletes."""
        if self._round is not None:
            await asyncio.wait({self._round}, timeout=5.0)
