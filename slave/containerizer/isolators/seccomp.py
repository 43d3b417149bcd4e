"""The seccomp isolator: which filter a container's command runs under.

The profile is resolved and compiled (once per profile, cached) in
``prepare``; the launcher loads it last before exec (see seccomp.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from corral.slave.containerizer.isolator import Isolator, Prepared
from corral.slave.containerizer.model import ContainerConfig
from corral.slave.containerizer.seccomp import SeccompPolicy


class SeccompIsolator(Isolator):
    name: ClassVar[str] = "seccomp"

    def __init__(self, profiles: Mapping[str, Path] | None = None) -> None:
        # Which profile a task may ask for is the agent's policy; here every
        # profile this containerizer was given, "default" and "unconfined".
        self.policy = SeccompPolicy(profiles, allow_unconfined=True)

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        iso = config.isolation
        return Prepared(seccomp=self.policy.program(self.policy.resolve(iso.seccomp_profile)))
