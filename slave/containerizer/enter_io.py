"""The agent's end of an entered command's standard streams (enter.py's
``run_inside``): pipes, or a pseudo-terminal for ``corral exec -t``.

Without a terminal the command's stdin is /dev/null or a pipe fed from a
queue, and stdout and stderr are one pipe. With one, the agent opens a pty
pair, sets its size, gives the helper the pty (it makes it its session's
controlling terminal, so the command is the terminal's foreground job: ^C
typed by the user interrupts the command) and reads and writes the other
end. A terminal gives no end-of-file while anything holds it open: once the
helper has exited, what is left is read for a moment, then reading stops.

Agent side only (asyncio, fcntl); the helper never imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

#: how long a terminal's last output is read after the helper has exited
TTY_DRAIN_S = 0.3
#: ^D: "end of input" on a terminal in canonical mode
EOT = b"\x04"

Input = bytes | tuple[int, int] | None


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to blocking ``fd`` and close it (the helper's request)."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_pid(fd: int) -> int:
    """The pid the helper wrote on ``fd`` (0: none, e.g. it never forked)."""
    os.set_blocking(fd, False)
    try:
        return int(os.read(fd, 32).strip() or 0)
    except (OSError, ValueError):
        return 0


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


@dataclass
class Plumbing:
    """The fds of one entered command: what the helper gets, what we keep."""

    child_stdin: int
    child_stdout: int
    child_stderr: int
    #: our end of the pty; -1 without a terminal
    master: int = -1
    #: the pty's other end, closed in us once the helper has it
    slave: int = -1

    @classmethod
    def open(cls, tty: tuple[int, int] | None, piped_stdin: bool) -> Plumbing:
        if tty is None:
            stdin = asyncio.subprocess.PIPE if piped_stdin else asyncio.subprocess.DEVNULL
            return cls(stdin, asyncio.subprocess.PIPE, asyncio.subprocess.STDOUT)
        master, slave = os.openpty()
        os.set_inheritable(master, False)
        set_size(master, *tty)
        os.set_blocking(master, False)
        return cls(slave, slave, slave, master=master, slave=slave)

    def close_child_ends(self) -> None:
        if self.slave >= 0:
            os.close(self.slave)
            self.slave = -1

    def close(self) -> None:
        self.close_child_ends()
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    async def pump(self, inputs: asyncio.Queue[Input], proc: asyncio.subprocess.Process) -> None:
        """Feed the command's stdin from ``inputs`` until it ends."""
        while True:
            item = await inputs.get()
            if isinstance(item, tuple):
                if self.master >= 0:
                    set_size(self.master, *item)
                continue
            if self.master >= 0:
                await _write_tty(self.master, EOT if item is None else item)
                continue
            if proc.stdin is None:
                return
            if item is None:
                proc.stdin.close()
                return
            try:
                proc.stdin.write(item)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                return  # the command stopped reading: what it did not take is dropped

    async def read_output(
        self,
        proc: asyncio.subprocess.Process,
        on_output: Callable[[bytes], Awaitable[None]] | None,
        keep: int,
    ) -> bytes:
        """Read the command's output until it ends; the last ``keep`` bytes."""
        tail = b""

        async def got(chunk: bytes) -> None:
            nonlocal tail
            tail = (tail + chunk)[-keep:]
            if on_output is not None:
                await on_output(chunk)

        if self.master < 0:
            assert proc.stdout is not None
            while chunk := await proc.stdout.read(keep):
                await got(chunk)
            await proc.wait()
            return tail
        reader = asyncio.ensure_future(self._read_tty(got))
        try:
            await asyncio.wait(
                {reader, asyncio.ensure_future(proc.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            await proc.wait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TTY_DRAIN_S):
                    await asyncio.shield(reader)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return tail

    async def _read_tty(self, got: Callable[[bytes], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ready: asyncio.Future[None] = loop.create_future()

            def wake(f: asyncio.Future[None] = ready) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(self.master, wake)
            try:
                await ready
            finally:
                loop.remove_reader(self.master)
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                continue
            except OSError as e:
                if e.errno == errno.EIO:
                    return  # every holder of the other end closed it
                raise
            if not chunk:
                return
            await got(chunk)


async def _write_tty(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await asyncio.sleep(0.01)  # the terminal's input buffer is full: the command reads slowly
