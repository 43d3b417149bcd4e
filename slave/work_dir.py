"""Modes of the agent's work directory, so host users cannot reach what tasks and images hold.

A layer or a sandbox may hold setuid binaries (an image's, or one a root task
wrote); if any host user could reach them they could run them (as Moby's
CVE-2021-41091). So:

* the work dir, ``sandboxes/`` and ``sandboxes/<framework>/`` are 0711:
  traversable, not listable, so a task running as a non-root user (its
  sandbox is chowned to it) can still reach its own sandbox by path;
* each sandbox is 0700, owned by root or by the task's user: only that user;
* ``containers/`` (overlay upper dirs), ``meta/`` and the image store root are
  0700: the overlay is mounted by the container's init as root, which needs no
  one else's access.

The agent applies these at start to directories an earlier version made.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TRAVERSE = 0o711
PRIVATE = 0o700


def ensure_dir(path: Path, mode: int) -> None:
    """Create ``path`` (parents with the default mode) and set exactly ``mode`` on it."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    os.chmod(path, mode)


def make_sandbox(sandbox: Path) -> None:
    """Create a task's sandbox 0700 under traversable-only parents (see the module doc)."""
    ensure_dir(sandbox.parent.parent, TRAVERSE)
    ensure_dir(sandbox.parent, TRAVERSE)
    ensure_dir(sandbox, PRIVATE)


def secure_work_dir(work_dir: Path, image_store: Path) -> None:
    """Create the work dir and fix the modes of what it holds (and of the image store root)."""
    ensure_dir(work_dir, TRAVERSE)
    sandboxes = work_dir / "sandboxes"
    ensure_dir(sandboxes, TRAVERSE)
    for framework in _subdirs(sandboxes):
        with contextlib.suppress(OSError):
            os.chmod(framework, TRAVERSE)
        for sandbox in _subdirs(framework):
            with contextlib.suppress(OSError):
                os.chmod(sandbox, os.lstat(sandbox).st_mode & PRIVATE)
    for private in (work_dir / "containers", work_dir / "meta", image_store):
        ensure_dir(private, PRIVATE)


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []
