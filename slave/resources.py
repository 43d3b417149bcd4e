"""What an agent advertises when no ``--resources`` are given."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from corral.resources import MILLI, RangeSet, Resources

DEFAULT_PORTS = RangeSet(((31000, 32000),))


def detect(work_dir: Path, share: tuple[int, int] = (0, 1)) -> Resources:
    """This machine's resources, less a reserve for the system (as Mesos does:
    1 GiB or half of memory, 5 GiB or half of disk). ``share=(i, n)`` gives the
    i-th of n equal slices, for several agents on one host (``corral local``).
    """
    index, count = share
    cpus_milli = (os.cpu_count() or 1) * MILLI // count
    mem_mib = _mem_total_mib()
    mem_mib -= min(1024, mem_mib // 2)
    work_dir.mkdir(parents=True, exist_ok=True)
    disk_mib = shutil.disk_usage(work_dir).free // (1024 * 1024)
    disk_mib -= min(5120, disk_mib // 2)
    ports = _slice_ports(DEFAULT_PORTS, index, count)
    return Resources(
        scalars={
            ("cpus", ""): cpus_milli,
            ("mem", ""): (mem_mib // count) * MILLI,
            ("disk", ""): (disk_mib // count) * MILLI,
        },
        ranges={("ports", ""): ports} if ports else {},
    )


def _mem_total_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 1024


def _slice_ports(ports: RangeSet, index: int, count: int) -> RangeSet:
    begin, end = ports.intervals[0]
    width = (end - begin + 1) // count
    lo = begin + index * width
    return RangeSet(((lo, lo + width - 1),)) if width > 0 else RangeSet()
