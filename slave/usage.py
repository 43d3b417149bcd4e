"""The agent's answer to a usage question: live statistics of its running tasks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from corral.codec import resources_from_proto
from corral.proto import agent_pb2
from corral.proto import messages_pb2 as pb
from corral.resources import MILLI
from corral.slave.containerizer import ContainerError, Containerizer
from corral.slave.containerizer.errors import CgroupError

TaskKey = tuple[str, str]


class _Run(Protocol):
    """What this module needs of the agent's TaskRun."""

    @property
    def framework_id(self) -> str: ...
    @property
    def info(self) -> pb.TaskInfo: ...
    @property
    def container_id(self) -> str: ...


async def collect(
    tasks: Mapping[TaskKey, _Run],
    containerizer: Containerizer,
    request: agent_pb2.MasterMessage.GetUsage,
    clock: Callable[[], float] = time.time,
) -> agent_pb2.AgentMessage:
    """Measure the asked tasks (all when ``request.task_ids`` is empty) that run here.

    Tasks that ended, or are not launched yet, are left out: the answer lists
    what could be measured.
    """
    wanted = {tuple(t.split("/", 1)) for t in request.task_ids if "/" in t}
    keys = [k for k in tasks if not request.task_ids or k in wanted]

    async def one(key: TaskKey) -> pb.TaskUsage | None:
        run = tasks[key]
        try:
            u = await containerizer.usage(run.container_id)
        except (ContainerError, CgroupError, OSError, ValueError):
            return None  # not launched yet, or ended while we asked
        return pb.TaskUsage(
            framework_id=run.framework_id,
            task_id=run.info.task_id,
            state=u.state,
            cpu_time_s=u.cpu_time_s,
            mem_bytes=u.mem_bytes,
            mem_peak_bytes=u.mem_peak_bytes,
            mem_limit_bytes=u.mem_limit_bytes,
            pids=u.pids,
            pids_limit=u.pids_limit,
            disk_bytes=u.disk_bytes,
            disk_limit_bytes=u.disk_limit_bytes,
            cpus=resources_from_proto(run.info.resources).scalar("cpus") / MILLI,
            timestamp=clock(),
        )

    results = await asyncio.gather(*(one(k) for k in keys))
    return agent_pb2.AgentMessage(
        usage=agent_pb2.AgentMessage.Usage(
            request_id=request.request_id, tasks=[r for r in results if r is not None]
        )
    )
