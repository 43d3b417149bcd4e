"""Read a task's sandbox files from a framework: its stdout, stderr or any file in it.

The sandbox is the task's working directory on its agent (docs/frameworks.md,
"What a task sees"); it outlives the task until the agent's sandbox GC. The
master relays the read to the agent (the operator API's ReadFile, which
``corral logs`` uses too), as the framework's own principal: a framework reads
its own tasks' sandboxes (ACL action ``read_sandbox``).

    from corral.frameworks.sandbox import read_file

    async def status_update(self, driver, status):
        if status.state is TaskState.FAILED:
            tail = await read_file(driver, status.task_id, "stderr")
            print(tail.text())
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import grpc.aio

from corral.errors import CallError, NotConnectedError
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.types import TaskStatus
from corral.proto import operator_pb2, operator_pb2_grpc
from corral.transport import make_channel

#: how long one read may take before it fails (the master's own relay timeout is shorter)
READ_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class SandboxFile:
    """Part of a file of a task's sandbox."""

    #: the bytes read, from ``offset``: at most ``length`` (the master's default: 64 KiB)
    data: bytes
    #: the file's whole size now, to read on from ``offset + len(data)``
    size: int
    #: the task's latest status as the master knows it (None if it sent none)
    status: TaskStatus | None

    def text(self) -> str:
        """``data`` decoded as UTF-8, undecodable bytes replaced."""
        return self.data.decode(errors="replace")


async def read_file(
    driver: SchedulerDriver, task_id: str, path: str = "stdout", *, offset: int = 0, length: int = 0
) -> SandboxFile:
    """Read ``path`` (relative to the sandbox: ``stdout``, ``stderr``, ``out/result.json``)
    of this framework's task ``task_id``, from ``offset``, at most ``length`` bytes (0: the
    master's default, 64 KiB).

    Raises :class:`NotConnectedError` while the driver has no master,
    :class:`~corral.errors.CallError` when the master refuses: ``NOT_FOUND`` (no such
    task or file), ``UNAVAILABLE`` (its agent is away), ``INVALID_ARGUMENT`` (a path
    outside the sandbox), ``PERMISSION_DENIED``.
    """
    master = driver.master_info
    if not driver.connected.is_set() or master is None or not master.address:
        raise NotConnectedError(f"read_file {task_id} {path}: not connected to the master (reconnecting)")
    request = operator_pb2.ReadFileRequest(
        task_id=task_id, framework_id=driver.framework_id, path=path, offset=offset, length=length
    )
    channel = make_channel(master.address, driver.credentials)
    try:
        stub = operator_pb2_grpc.OperatorStub(channel)
        response = await stub.ReadFile(
            request, metadata=driver.credentials.metadata(), timeout=READ_TIMEOUT_S
        )
    except grpc.aio.AioRpcError as e:
        raise CallError(e.code().name, f"read_file {task_id} {path}: {e.details()}") from None
    finally:
        await channel.close(None)
    status = TaskStatus.from_proto(response.status) if response.HasField("status") else None
    return SandboxFile(data=response.data, size=response.size, status=status)
