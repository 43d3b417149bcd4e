"""The freezer: pausing and resuming a container (v1 ``freezer.state``, v2
``cgroup.freeze``), and keeping a pause across an agent restart.

A pause on purpose is marked on disk (``PAUSED_MARK`` in the container's
meta dir), so a restarted agent can tell it from a cgroup an agent left
frozen in the middle of a SIGKILL round (freeze, kill, thaw), which must be
thawed or the task could neither run nor end.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import structlog

from corral.slave.containerizer import stopping
from corral.slave.containerizer.cgroups.base import CgroupBackend
from corral.slave.containerizer.errors import CgroupError, ContainerError
from corral.slave.containerizer.isolator import Isolator, Running

log = structlog.get_logger(__name__)

#: in a container's meta dir while it is paused on purpose
PAUSED_MARK = "paused"


class CgroupsFreezerIsolator(Isolator):
    name: ClassVar[str] = "cgroups/freezer"

    def __init__(self, cgroups: CgroupBackend) -> None:
        self.cgroups = cgroups

    async def pause(self, container: Running) -> None:
        """Freeze every process; raises ContainerError if that fails (then thawed)."""
        await stopping.freeze(self.cgroups, container.cgroup, container.done, container.container_id)
        try:
            (container.meta_dir / PAUSED_MARK).touch()
        except OSError as e:
            self.cgroups.set_frozen(container.cgroup, False)
            raise ContainerError(f"container {container.container_id!r} cannot be paused: {e}") from e

    def thaw(self, container: Running) -> None:
        self.cgroups.set_frozen(container.cgroup, False)
        (container.meta_dir / PAUSED_MARK).unlink(missing_ok=True)

    def restore(self, container: Running, ended: bool) -> bool:
        """After an agent restart: whether the container stays paused (the mark
        vouches for it and it still runs); thawed otherwise."""
        mark = container.meta_dir / PAUSED_MARK
        with contextlib.suppress(OSError, CgroupError):
            if mark.exists() and not ended and self.cgroups.frozen(container.cgroup):
                return True
            self.cgroups.set_frozen(container.cgroup, False)
            mark.unlink(missing_ok=True)
        return False
