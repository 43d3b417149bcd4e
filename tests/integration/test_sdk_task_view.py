"""What a host-filesystem task sees, as docs/frameworks.md ("What a task
sees") says: its sandbox as working directory, a private empty /tmp tmpfs of
64 MiB, the host's /var/tmp shared and lasting, a minimal /dev."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from corral.frameworks import Task, TaskState
from corral.resources import Resources
from corral.testing import framework, local_cluster

pytestmark = [pytest.mark.root]

PROBE = r"""
set -e
test "$PWD" = "$CORRAL_SANDBOX"
echo "tmp_fs=$(awk '$5 == "/tmp" {print $9}' /proc/self/mountinfo | tail -1)"
echo "tmp_kib=$(df -k /tmp | awk 'NR == 2 {print $2}')"
echo "host_tmp_file=$(test -e /tmp/MARK && echo seen || echo hidden)"
echo "dev=$(ls /dev | tr '\n' ' ')"
echo from-the-task > /var/tmp/MARK.task
echo in-the-sandbox > kept
"""


async def test_a_task_sees_what_the_guide_says(tmp_path: Path) -> None:
    mark = f"corral-view-{uuid.uuid4().hex[:8]}"
    host_tmp = Path("/tmp") / mark
    shared = Path("/var/tmp") / f"{mark}.task"
    host_tmp.write_text("the host's\n")
    try:
        async with (
            local_cluster(tmp_path / "cluster", agents=1) as cluster,
            framework(cluster.master_address) as (driver, rec),
        ):
            offer = await rec.next_offer()
            command = PROBE.replace("MARK", mark)
            driver.launch(offer, [Task("view", command, Resources.of(cpus=0.1, mem=64))])
            status = await rec.wait_terminal("view")
            assert status.state is TaskState.FINISHED, (status.message, status.stderr_tail)
            (sandbox,) = (tmp_path / "cluster").rglob("view-*/stdout")
            seen = dict(line.split("=", 1) for line in sandbox.read_text().splitlines() if "=" in line)
        assert seen["tmp_fs"] == "tmpfs"
        assert seen["tmp_kib"] == str(64 * 1024)
        assert seen["host_tmp_file"] == "hidden"
        assert set(seen["dev"].split()) >= {"null", "zero", "full", "random", "urandom", "tty", "shm", "pts"}
        # Not the host's /dev: none of its disks, consoles or other nodes.
        host_only = set(os.listdir("/dev")) - {"null", "zero", "full", "random", "urandom", "tty", "shm"}
        host_only -= {"pts", "ptmx", "fd", "stdin", "stdout", "stderr", "mqueue", "console"}
        assert host_only, "the host has a /dev of its own"
        assert not host_only & set(seen["dev"].split()), seen["dev"]
        # /var/tmp is the host's: the task's file is there after it ended.
        assert shared.read_text() == "from-the-task\n"
        # The sandbox outlives the task.
        assert (sandbox.parent / "kept").read_text() == "in-the-sandbox\n"
    finally:
        host_tmp.unlink(missing_ok=True)
        shared.unlink(missing_ok=True)
