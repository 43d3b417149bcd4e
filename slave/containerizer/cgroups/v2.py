"""cgroup v2 (unified hierarchy) backend.

Containers are leaves under ``<root>/<prefix>``; no process ever joins the prefix
itself, because a v2 cgroup with processes cannot hand controllers to children
("no internal processes" rule, Documentation/admin-guide/cgroup-v2.rst).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import structlog

from corral.slave.containerizer.cgroups import device_program, devices, files
from corral.slave.containerizer.cgroups.base import (
    CPU_PERIOD_US,
    CgroupBackend,
    CgroupLimits,
    MemoryStats,
    PidsStats,
    kill_pids,
)
from corral.slave.containerizer.errors import CgroupError

log = structlog.get_logger(__name__)

CONTROLLERS = ("cpu", "memory", "pids")


def shares_to_weight(shares: int) -> int:
    """Map v1 cpu.shares [2, 262144] onto v2 cpu.weight [1, 10000] as runc and systemd do."""
    return 1 + ((shares - 2) * 9999) // 262_142


class V2Backend(CgroupBackend):
    version: ClassVar[str] = "v2"

    def __init__(self, root: Path = Path("/sys/fs/cgroup"), *, require_memory: bool = True) -> None:
        """``require_memory=False`` only for checking the core interface (procs,
        freeze, kill, events) on a hybrid host's controller-less cgroup2 mount:
        containers need the memory controller."""
        self.root = root
        available = (files.read_text(root / "cgroup.controllers") or "").split()
        if require_memory and "memory" not in available:
            raise CgroupError(
                f"cgroup v2 at {root} does not offer the memory controller "
                f"(cgroup.controllers: {' '.join(available) or 'empty'})"
            )
        self.controllers = tuple(c for c in CONTROLLERS if c in available)
        #: cgroup.kill when the kernel has it (5.14); else freeze, SIGKILL each, thaw
        self.use_cgroup_kill = True
        self._created: list[Path] = []

    def _enable_subtree(self, cgroup: Path) -> None:
        text = files.read_text(cgroup / "cgroup.subtree_control") or ""
        enabled = {c.lstrip("+") for c in text.split()}
        wanted = [c for c in self.controllers if c not in enabled]
        if not wanted:
            return
        control = cgroup / "cgroup.subtree_control"
        try:
            files.write(control, " ".join(f"+{c}" for c in wanted))
            return
        except CgroupError:
            pass
        # One controller per write, so that a refused one does not hide the others.
        for controller in wanted:
            try:
                files.write(control, f"+{controller}")
            except CgroupError:
                if controller == "memory":
                    raise
                log.warning("cgroup.controller_unavailable", controller=controller, cgroup=str(cgroup))

    def prepare_prefix(self, prefix: str) -> None:
        current = self.root
        self._enable_subtree(current)
        for part in Path(prefix).parts:
            current = current / part
            if not current.is_dir():
                try:
                    current.mkdir()
                except FileExistsError:
                    pass
                except OSError as e:
                    raise CgroupError(f"cannot create cgroup {current}: {e.strerror}") from e
                self._created.append(current)
            self._enable_subtree(current)

    def remove_prefix(self, prefix: str) -> None:
        for cgroup in reversed(self._created):
            try:
                files.rmdir(cgroup)
            except CgroupError as e:
                log.warning("cgroup.prefix_not_removed", cgroup=str(cgroup), error=str(e))
        self._created.clear()

    def _dir(self, path: str) -> Path:
        return self.root / path

    def task_mounts(self) -> tuple[tuple[bytes, bytes, bytes], ...]:
        return ((b"", b"cgroup2", b""),)

    def dirs(self, path: str) -> tuple[Path, ...]:
        return (self._dir(path),)

    def create(self, path: str, limits: CgroupLimits) -> tuple[Path, ...]:
        cgroup = self._dir(path)
        try:
            cgroup.mkdir()
        except FileExistsError as e:
            raise CgroupError(f"cgroup {cgroup} already exists") from e
        except OSError as e:
            raise CgroupError(f"cannot create cgroup {cgroup}: {e.strerror}") from e
        try:
            self._set_limits(cgroup, limits)
        except CgroupError:
            files.rmdir(cgroup)
            raise
        return (cgroup / "cgroup.procs",)

    def _set_limits(self, cgroup: Path, limits: CgroupLimits) -> None:
        if "cpu" in self.controllers:
            files.write(cgroup / "cpu.weight", str(shares_to_weight(limits.cpu_shares)))
            quota = "max" if limits.cpu_quota_us is None else str(limits.cpu_quota_us)
            files.write(cgroup / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        if "memory" in self.controllers:
            files.write(cgroup / "memory.max", str(limits.mem_bytes))
            # Kill the whole container on OOM, not one process of it (as Kubernetes does).
            files.write(cgroup / "memory.oom.group", "1")
            try:
                files.write(cgroup / "memory.swap.max", "0")
            except CgroupError:
                # Hosts without swap accounting have no memory.swap.max; nothing to limit.
                log.debug("cgroup.no_swap_accounting", cgroup=str(cgroup))
        if "pids" in self.controllers:
            value = "max" if limits.pids_max is None else str(limits.pids_max)
            files.write(cgroup / "pids.max", value)
        if limits.devices is not None:
            # v2's device control is a BPF program, not a controller file.
            device_program.attach(cgroup, (*devices.DEFAULT_RULES, *limits.devices))

    def procs(self, path: str) -> set[int]:
        return files.read_pids(self._dir(path) / "cgroup.procs")

    def kill_all(self, path: str) -> None:
        cgroup = self._dir(path)
        kill_file = cgroup / "cgroup.kill"
        if self.use_cgroup_kill and kill_file.exists():
            # cgroup.kill (Linux 5.14) kills the subtree atomically: no fork can escape.
            files.write(kill_file, "1")
            return
        freeze = cgroup / "cgroup.freeze"
        frozen = freeze.exists()
        if frozen:
            files.write(freeze, "1")
        try:
            kill_pids(self.procs(path))
        finally:
            if frozen:
                files.write(freeze, "0")

    def set_frozen(self, path: str, frozen: bool) -> None:
        files.write(self._dir(path) / "cgroup.freeze", "1" if frozen else "0")

    def frozen(self, path: str) -> bool:
        # cgroup.events says "frozen 1" once every process has stopped.
        return files.read_flat_keyed(self._dir(path) / "cgroup.events").get("frozen", 0) == 1

    def cpu_time_ns(self, path: str) -> int:
        return files.read_flat_keyed(self._dir(path) / "cpu.stat").get("usage_usec", 0) * 1000

    def memory_stats(self, path: str) -> MemoryStats:
        cgroup = self._dir(path)
        current = files.read_int(cgroup / "memory.current")
        return MemoryStats(
            current=current,
            # memory.peak arrived in Linux 5.19; before it the best we know is now.
            peak=files.read_int(cgroup / "memory.peak", default=current),
            limit=files.read_int(cgroup / "memory.max"),
            oom_kills=files.read_flat_keyed(cgroup / "memory.events").get("oom_kill", 0),
        )

    def pids_stats(self, path: str) -> PidsStats:
        cgroup = self._dir(path)
        return PidsStats(
            current=files.read_int(cgroup / "pids.current"),
            limit=files.read_int(cgroup / "pids.max"),
            max_events=files.read_flat_keyed(cgroup / "pids.events").get("max", 0),
        )

    def remove(self, path: str) -> bool:
        return files.rmdir(self._dir(path))
