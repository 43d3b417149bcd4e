"""Errors raised by the containerizer.

``corral/errors.py`` is meant to hold the project's hierarchy; until it has a
base for agent-side failures these derive from :class:`Exception`::

    ContainerError          a container could not be launched, killed or removed
    └── CgroupError         the cgroup hierarchy is missing, unusable or refused a write

Expected outcomes (a task exiting non-zero, being OOM-killed) are not errors:
they are reported as a :class:`~corral.slave.containerizer.model.Termination`.
"""

from __future__ import annotations


class ContainerError(Exception):
    """A containerizer operation failed; the message is a full sentence."""


class CgroupError(ContainerError):
    """The cgroup hierarchy cannot be used as needed."""
