"""The agent's work dir, sandboxes, overlay dirs and image store are out of other host users' reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.overlay import Rootfs, prepare
from corral.slave.work_dir import make_sandbox, secure_work_dir

NOBODY = 65534


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def _as_nobody(*argv: str) -> int:
    return subprocess.run(
        argv, check=False, user=NOBODY, group=NOBODY, capture_output=True, timeout=30
    ).returncode


@pytest.fixture
def work() -> Iterator[Path]:
    # Our own directory, reachable by everyone (pytest's tmp root is 0700), so
    # the test can tell what corral itself allows.
    top = Path(tempfile.mkdtemp(prefix="corral-modes-", dir="/tmp"))
    os.chmod(top, 0o755)
    try:
        yield top / "work"
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_agent_dirs_are_traversable_only_and_private(work: Path) -> None:
    store = work / "images"
    secure_work_dir(work, store)
    assert _mode(work) == 0o711
    assert _mode(work / "sandboxes") == 0o711
    assert _mode(work / "containers") == 0o700
    assert _mode(work / "meta") == 0o700
    assert _mode(store) == 0o700


def test_existing_world_readable_dirs_are_fixed_at_start(work: Path) -> None:
    sandbox = work / "sandboxes" / "fw" / "c1"
    sandbox.mkdir(parents=True, mode=0o755)
    for d in (work, work / "sandboxes", work / "sandboxes" / "fw", sandbox):
        os.chmod(d, 0o755)
    (work / "containers").mkdir(mode=0o755)
    os.chmod(work / "containers", 0o755)
    secure_work_dir(work, work / "images")
    assert (_mode(work), _mode(work / "sandboxes"), _mode(work / "sandboxes" / "fw")) == (0o711,) * 3
    assert _mode(sandbox) == 0o700
    assert _mode(work / "containers") == 0o700


def test_a_non_root_task_reaches_its_own_sandbox_and_no_other(work: Path) -> None:
    secure_work_dir(work, work / "images")
    mine = work / "sandboxes" / "fw" / "mine"
    root_task = work / "sandboxes" / "fw" / "root-task"
    make_sandbox(mine)
    make_sandbox(root_task)
    os.chown(mine, NOBODY, NOBODY)
    (root_task / "suid").write_bytes(b"#!/bin/sh\n")
    os.chmod(root_task / "suid", 0o4755)
    assert _as_nobody("sh", "-c", f"echo hi > {mine}/out && cat {mine}/out") == 0
    assert _as_nobody("test", "-x", str(root_task / "suid")) != 0
    assert _as_nobody("ls", str(work / "sandboxes" / "fw")) != 0


def test_image_layers_and_overlay_dirs_are_private(work: Path) -> None:
    store = ImageStore(work / "images")
    store._prepare()
    assert _mode(store.root) == 0o700
    layer = store.layer_dir("sha256:" + "a" * 64)
    layer.mkdir(parents=True)
    assert _as_nobody("test", "-d", str(layer)) != 0
    meta = work / "containers" / "c1"
    meta.mkdir(parents=True)
    prepare(Rootfs((layer,)), (), work / "sb", "", meta)
    assert _mode(meta / "overlay") == 0o700
