"""The launcher's exec report: what a container's init says on its pipe.

One line per fact, ``P<pid>`` (the task's pid, once it exec'd) or
``E<message>`` (why it could not start); the pipe closes at exec (it is
close-on-exec) or when the init gives up.
"""

from __future__ import annotations

import asyncio
import os


def parse_exec_report(report: bytes) -> tuple[int | None, str | None]:
    """(task pid, error) from a report; either may be None."""
    task_pid: int | None = None
    error: str | None = None
    for line in report.splitlines():
        if line.startswith(b"P") and line[1:].isdigit():
            task_pid = int(line[1:])
        elif line.startswith(b"E"):
            error = line[1:].decode(errors="replace")
    return task_pid, error


async def read_to_eof(fd: int) -> bytes:
    """Read a pipe until EOF through the event loop; closes ``fd``."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    chunks: list[bytes] = []
    os.set_blocking(fd, False)

    def on_readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
        elif not done.done():
            done.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks)
