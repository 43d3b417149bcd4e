"""cgroup v1 backend: one hierarchy per controller, each mounted separately.

Mounts are given explicitly (probe reads them from /proc/self/mountinfo), so a
host that co-mounts ``cpu,cpuacct`` gets one directory for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import structlog

from corral.slave.containerizer.cgroups import devices, files
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

REQUIRED = ("cpu", "memory")
OPTIONAL = ("cpuacct", "pids", "freezer", "devices")
# Spinning on freezer.state is bounded: a few hundred reads cost well under 1 ms.
_FREEZE_POLLS = 200


class V1Backend(CgroupBackend):
    version: ClassVar[str] = "v1"

    def __init__(self, mounts: Mapping[str, Path]) -> None:
        missing = [c for c in REQUIRED if c not in mounts]
        if missing:
            raise CgroupError(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        self.mounts = {c: mounts[c] for c in (*REQUIRED, *OPTIONAL) if c in mounts}
        # Co-mounted controllers share a directory; create and join it once.
        self._roots = tuple(dict.fromkeys(self.mounts.values()))
        self._created: list[Path] = []

    @classmethod
    def from_root(cls, root: Path = Path("/sys/fs/cgroup")) -> V1Backend:
        return cls({c: root / c for c in (*REQUIRED, *OPTIONAL) if (root / c).is_dir()})

    def _dir(self, controller: str, path: str) -> Path | None:
        mount = self.mounts.get(controller)
        return None if mount is None else mount / path

    def dirs(self, path: str) -> tuple[Path, ...]:
        return tuple(root / path for root in self._roots)

    def task_mounts(self) -> tuple[tuple[bytes, bytes, bytes], ...]:
        by_root: dict[Path, list[str]] = {}
        for controller, root in self.mounts.items():
            by_root.setdefault(root, []).append(controller)
        return tuple(
            (root.name.encode(), b"cgroup", ",".join(controllers).encode())
            for root, controllers in by_root.items()
        )

    def prepare_prefix(self, prefix: str) -> None:
        for root in self._roots:
            current = root
            for part in Path(prefix).parts:
                current = current / part
                if current.is_dir():
                    continue
                try:
                    current.mkdir()
                except FileExistsError:
                    continue
                except OSError as e:
                    raise CgroupError(f"cannot create cgroup {current}: {e.strerror}") from e
                self._created.append(current)

    def remove_prefix(self, prefix: str) -> None:
        for cgroup in reversed(self._created):
            try:
                files.rmdir(cgroup)
            except CgroupError as e:
                log.warning("cgroup.prefix_not_removed", cgroup=str(cgroup), error=str(e))
        self._created.clear()

    def create(self, path: str, limits: CgroupLimits) -> tuple[Path, ...]:
        made: list[Path] = []
        try:
            for cgroup in self.dirs(path):
                try:
                    cgroup.mkdir()
                except FileExistsError as e:
                    raise CgroupError(f"cgroup {cgroup} already exists") from e
                except OSError as e:
                    raise CgroupError(f"cannot create cgroup {cgroup}: {e.strerror}") from e
                made.append(cgroup)
            self._set_limits(path, limits)
        except CgroupError:
            for cgroup in made:
                files.rmdir(cgroup)
            raise
        return tuple(cgroup / "cgroup.procs" for cgroup in made)

    def _set_limits(self, path: str, limits: CgroupLimits) -> None:
        cpu = self.mounts["cpu"] / path
        files.write(cpu / "cpu.shares", str(limits.cpu_shares))
        if limits.cpu_quota_us is not None:
            files.write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            files.write(cpu / "cpu.cfs_quota_us", str(limits.cpu_quota_us))
        memory = self.mounts["memory"] / path
        files.write(memory / "memory.limit_in_bytes", str(limits.mem_bytes))
        # memsw (memory+swap) must be >= limit_in_bytes, so it is set second;
        # equal values mean no swap, as Mesos' memory isolator does.
        if (memory / "memory.memsw.limit_in_bytes").exists():
            files.write(memory / "memory.memsw.limit_in_bytes", str(limits.mem_bytes))
        pids = self._dir("pids", path)
        if pids is not None:
            value = "max" if limits.pids_max is None else str(limits.pids_max)
            files.write(pids / "pids.max", value)
        elif limits.pids_max is not None:
            raise CgroupError("pids_max was asked for but the pids controller is not mounted")
        device_dir = self._dir("devices", path)
        if limits.devices is not None:
            if device_dir is None:
                raise CgroupError("device control was asked for but the devices controller is not mounted")
            devices.apply_v1(device_dir, limits.devices)

    def procs(self, path: str) -> set[int]:
        pids: set[int] = set()
        for cgroup in self.dirs(path):
            pids |= files.read_pids(cgroup / "cgroup.procs")
        return pids

    def kill_all(self, path: str) -> None:
        freezer = self._dir("freezer", path)
        if freezer is None or not freezer.is_dir():
            kill_pids(self.procs(path))
            return
        # Frozen tasks cannot fork, so the pid list read below is complete; the
        # SIGKILLs are delivered when they thaw.
        state = freezer / "freezer.state"
        files.write(state, "FROZEN")
        try:
            for _ in range(_FREEZE_POLLS):
                if (files.read_text(state) or "").strip() == "FROZEN":
                    break
            kill_pids(self.procs(path))
        finally:
            files.write(state, "THAWED")

    def _freezer_state(self, path: str) -> Path:
        freezer = self._dir("freezer", path)
        if freezer is None:
            raise CgroupError("pausing needs the cgroup v1 freezer controller, which is not mounted")
        return freezer / "freezer.state"

    def set_frozen(self, path: str, frozen: bool) -> None:
        files.write(self._freezer_state(path), "FROZEN" if frozen else "THAWED")

    def frozen(self, path: str) -> bool:
        # FREEZING while some task has not stopped yet; FROZEN once all have.
        return (files.read_text(self._freezer_state(path)) or "").strip() == "FROZEN"

    def cpu_time_ns(self, path: str) -> int:
        cpuacct = self._dir("cpuacct", path)
        return 0 if cpuacct is None else files.read_int(cpuacct / "cpuacct.usage")

    def memory_stats(self, path: str) -> MemoryStats:
        memory = self.mounts["memory"] / path
        return MemoryStats(
            current=files.read_int(memory / "memory.usage_in_bytes"),
            peak=files.read_int(memory / "memory.max_usage_in_bytes"),
            limit=files.read_int(memory / "memory.limit_in_bytes"),
            oom_kills=files.read_flat_keyed(memory / "memory.oom_control").get("oom_kill", 0),
        )

    def pids_stats(self, path: str) -> PidsStats:
        pids = self._dir("pids", path)
        if pids is None:
            return PidsStats(0, 0, 0)
        return PidsStats(
            current=files.read_int(pids / "pids.current"),
            limit=files.read_int(pids / "pids.max"),
            max_events=files.read_flat_keyed(pids / "pids.events").get("max", 0),
        )

    def remove(self, path: str) -> bool:
        # Page cache the task left (its stdout, files it wrote) stays charged
        # to a removed v1 memory cgroup and keeps it alive as a "dying" cgroup;
        # thousands of those slow every later mkdir and fork (measured here:
        # 1,800 of them halved launches/s). force_empty drops the charges first.
        memory = self.mounts["memory"] / path
        with contextlib.suppress(OSError):
            (memory / "memory.force_empty").write_text("0")
        gone = True
        for cgroup in self.dirs(path):
            gone = files.rmdir(cgroup) and gone
        return gone
