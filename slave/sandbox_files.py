"""Reading a file from a task's sandbox on an operator's behalf, safely.

The task owns its sandbox and may change it while the agent (root) reads, so
the file is opened with slave/beneath.py (no symlink followed anywhere): the
file opened is the one inside the sandbox whatever the task does meanwhile.
FIFOs and devices are refused without blocking (regular files only).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from corral.proto import agent_pb2
from corral.slave.beneath import open_beneath

MAX_READ = 1 << 20


class SandboxFileError(Exception):
    """The file cannot be read; the message names the path and why."""


def read(sandbox: Path, name: str, offset: int, length: int) -> tuple[bytes, int]:
    """Up to ``length`` bytes (at most 1 MiB) of ``sandbox/name`` from ``offset``, and its size.

    Raises SandboxFileError for absolute paths, ``..``, symlinks, missing files
    and anything that is not a regular file.
    """
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if "\0" in name or name.startswith("/") or ".." in parts or not parts:
        raise SandboxFileError(f"path {name!r}: must be a relative path inside the sandbox")
    try:
        root = os.open(sandbox, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_beneath(root, parts)
        finally:
            os.close(root)
    except FileNotFoundError:
        raise SandboxFileError(f"path {name!r}: no such file in the sandbox") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise SandboxFileError(
                f"path {name!r}: not a regular file inside the sandbox (symbolic links are not followed)"
            ) from None
        raise SandboxFileError(f"path {name!r}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SandboxFileError(f"path {name!r}: not a regular file")
        try:
            data = os.pread(fd, min(length, MAX_READ), min(offset, st.st_size))
        except OSError as e:
            raise SandboxFileError(f"path {name!r}: {e.strerror}") from None
        return data, st.st_size
    finally:
        os.close(fd)


def answer(req: agent_pb2.MasterMessage.ReadFile, sandbox: Path | None) -> agent_pb2.AgentMessage:
    """The agent's answer to the master's ReadFile for the task whose sandbox
    is ``sandbox`` (None: no such task here)."""

    def reply(**kw: object) -> agent_pb2.AgentMessage:
        data = agent_pb2.AgentMessage.FileData(request_id=req.request_id, **kw)  # type: ignore[arg-type]
        return agent_pb2.AgentMessage(file_data=data)

    if sandbox is None:
        task_id = req.task_id.partition("/")[2]
        return reply(error=f"task {task_id!r} has no sandbox on this agent")
    try:
        data, size = read(sandbox, req.path or "stdout", req.offset, req.length)
    except SandboxFileError as e:
        return reply(error=str(e))
    return reply(data=data, size=size)
