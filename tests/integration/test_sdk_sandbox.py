"""A framework reads its tasks' sandbox files through the SDK (frameworks/sandbox.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import CallError
from corral.frameworks import Task, TaskState
from corral.frameworks.sandbox import read_file
from corral.resources import Resources
from corral.testing import framework, local_cluster

pytestmark = [pytest.mark.root]

COMMAND = "echo hello; echo oops >&2; mkdir out; printf '{\"n\": 42}' > out/result.json"


async def test_a_framework_reads_stdout_stderr_and_any_file_of_its_task(tmp_path: Path) -> None:
    async with (
        local_cluster(tmp_path, agents=1) as cluster,
        framework(cluster.master_address) as (driver, rec),
    ):
        offer = await rec.next_offer()
        driver.launch(offer, [Task("writer", COMMAND, Resources.of(cpus=0.1, mem=32))])
        assert (await rec.wait_terminal("writer")).state is TaskState.FINISHED

        out = await read_file(driver, "writer")
        assert (out.text(), out.size) == ("hello\n", 6)
        assert out.status is not None
        assert out.status.state is TaskState.FINISHED
        assert (await read_file(driver, "writer", "stderr")).data == b"oops\n"
        result = await read_file(driver, "writer", "out/result.json", offset=1, length=4)
        assert (result.data, result.size) == (b'"n":', 9)

        with pytest.raises(CallError) as missing:
            await read_file(driver, "writer", "out/none.txt")
        assert missing.value.code == "NOT_FOUND"
        with pytest.raises(CallError) as outside:
            await read_file(driver, "writer", "../../etc/passwd")
        assert outside.value.code == "INVALID_ARGUMENT"
        with pytest.raises(CallError) as unknown:
            await read_file(driver, "no-such-task")
        assert unknown.value.code == "NOT_FOUND"
