"""The namespaces isolator: refuses a container whose namespaces this host lacks.

Which namespaces a task gets is its :class:`Isolation` (translated into clone
flags by isolation.py, unshared by the launcher); this isolator checks once
that the kernel has each (``/proc/self/ns/<name>``), so that a host without
one refuses with a sentence before anything is made instead of failing in
the task child.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.isolator import Isolator, Prepared
from corral.slave.containerizer.model import ContainerConfig, Isolation


def wanted(iso: Isolation) -> tuple[str, ...]:
    """The /proc/self/ns names ``iso`` needs."""
    names = [
        ("mnt", iso.mount),
        ("uts", iso.uts),
        ("ipc", iso.ipc),
        ("pid", iso.pid),
        ("net", iso.network != "host"),
        ("cgroup", iso.mount and iso.pid),
        ("user", iso.user_namespace),
    ]
    return tuple(name for name, on in names if on)


class NamespacesIsolator(Isolator):
    name: ClassVar[str] = "namespaces"

    def __init__(self, proc_ns: Path = Path("/proc/self/ns")) -> None:
        self.available = frozenset(os.listdir(proc_ns)) if proc_ns.is_dir() else frozenset()

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        missing = [n for n in wanted(config.isolation) if n not in self.available]
        if missing:
            raise ContainerError(
                f"isolation: this kernel has no {', '.join(missing)} namespace "
                f"(no /proc/self/ns/{missing[0]}); ask for less isolation or use another agent"
            )
        return Prepared()
