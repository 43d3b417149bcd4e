"""A task's labels come back on every status update of it (TaskStatus.labels),
reconciliation answers included."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.frameworks import Reason, Task, TaskState
from corral.resources import Resources
from corral.testing import framework, local_cluster

pytestmark = [pytest.mark.root]

LABELS = {"sweep": "s1", "point": "0.25"}


async def test_labels_come_back_on_status_updates(tmp_path: Path) -> None:
    async with (
        local_cluster(tmp_path, agents=1) as cluster,
        framework(cluster.master_address) as (driver, rec),
    ):
        offer = await rec.next_offer()
        driver.launch(
            offer,
            [
                Task("labelled", "sleep 0.2", Resources.of(cpus=0.1, mem=32), labels=LABELS),
                Task("plain", "true", Resources.of(cpus=0.1, mem=32)),
            ],
        )
        assert (await rec.wait_terminal("labelled")).state is TaskState.FINISHED
        assert (await rec.wait_terminal("plain")).state is TaskState.FINISHED
        labelled = [u for u in rec.updates if u.task_id == "labelled"]
        assert [u.state for u in labelled][-1] is TaskState.FINISHED
        assert len(labelled) >= 2  # RUNNING (or STARTING) and FINISHED
        assert all(u.labels == LABELS for u in labelled), [(u.state, u.labels) for u in labelled]
        assert all(u.labels == {} for u in rec.updates if u.task_id == "plain")

        # A reconciliation answer about the ended task carries them too.
        count = len(rec.updates)
        driver.reconcile([("labelled", offer.agent_id)])
        await rec.wait_for(lambda: len(rec.updates) > count, 10, "the reconciliation answer")
        answer = rec.updates[-1]
        assert (answer.task_id, answer.reason) == ("labelled", Reason.RECONCILIATION)
        assert answer.labels == LABELS
