"""The agent's side of the fork server (see forkserver.py for the process and protocol).

One ``ForkServerClient`` per containerizer. It starts the server on first use,
restarts it (with a warning) when it has died, and never waits on it without a
deadline: a server that does not answer in time is killed, and the launches
waiting on it fail. Requests carry ids, so concurrent launches are pipelined
over the one socket without holding each other's replies up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import structlog

from corral.slave.containerizer import launcher
from corral.slave.containerizer.forkserver import MAX_DATAGRAM

log = structlog.get_logger(__name__)

SERVER_PATH = Path(__file__).with_name("forkserver.py")
START_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 2.0
_REPLY_FDS = 3
_POLL_S = 0.005

_Reply = tuple[dict[str, object], list[int]]


class ForkServerError(Exception):
    """The fork server could not be started, died, or refused or failed a request."""

    def __init__(self, message: str, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno


class ForkServerClient:
    """Asks a fork server process to ``launcher.spawn`` supervisors.

    Must be used from one event loop's thread.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready: asyncio.Future[None] | None = None
        self._pending: dict[int, asyncio.Future[_Reply]] = {}
        self._next_id = 0
        self._start_lock = asyncio.Lock()
        # asyncio keeps one writer callback per fd, so one sender waits at a time.
        self._send_lock = asyncio.Lock()
        self._started_once = False

    @property
    def pid(self) -> int | None:
        """The running server's pid (None before the first launch and after close)."""
        return self._proc.pid if self._proc is not None and self._sock is not None else None

    async def spawn(self, spec: launcher.LaunchSpec) -> launcher.Spawned:
        """``launcher.spawn(spec)`` in the fork server; the caller owns the returned fds."""
        request_id = self._next_id
        self._next_id += 1
        body = json.dumps({"id": request_id, "spec": launcher.spec_to_json(spec)}).encode()
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            sock = await self._ensure_started()
            reply_fut: asyncio.Future[_Reply] = loop.create_future()
            self._pending[request_id] = reply_fut
            try:
                await self._send(sock, body, request_id)
                break
            except OSError as e:
                # The request never reached the server (a datagram is sent whole
                # or not at all), so starting another one and resending is safe.
                self._pending.pop(request_id, None)
                if reply_fut.done():
                    reply_fut.exception()  # set by _lost while we waited to send
                self._lost(f"cannot send to it: {e}")
                if attempt == 2:
                    raise ForkServerError(f"cannot send to the fork server: {e}", e.errno or 0) from e
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                reply, fds = await reply_fut
        except TimeoutError:
            self._lost(f"no reply within {REPLY_TIMEOUT_S:.0f} s", kill=True)
            raise ForkServerError(f"the fork server did not answer within {REPLY_TIMEOUT_S:.0f} s") from None
        finally:
            self._pending.pop(request_id, None)
        pid = reply.get("pid")
        if "error" in reply or not isinstance(pid, int) or len(fds) != _REPLY_FDS:
            for fd in fds:
                os.close(fd)
            errno_ = reply.get("errno")
            raise ForkServerError(
                str(reply.get("error", f"malformed reply {reply!r} with {len(fds)} fds")),
                errno_ if isinstance(errno_, int) else 0,
            )
        return launcher.Spawned(supervisor_pid=pid, exec_fd=fds[0], done_fd=fds[1], pidfd=fds[2])

    async def close(self) -> None:
        """Stop the server: it leaves at EOF on its socket; SIGKILL if it lingers."""
        proc = self._proc
        self._lost("closing", quiet=True)
        self._proc = None
        self._started_once = False
        if proc is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT_S
        while proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
        if proc.poll() is None:
            log.warning("forkserver.kill_on_close", pid=proc.pid)
            _kill_and_reap(proc)

    # -- internals -----------------------------------------------------------

    async def _ensure_started(self) -> socket.socket:
        async with self._start_lock:
            if self._sock is not None and self._proc is not None and self._proc.poll() is None:
                return self._sock
            if self._started_once:
                log.warning(
                    "forkserver.restarting",
                    old_pid=None if self._proc is None else self._proc.pid,
                    exit_status=None if self._proc is None else self._proc.poll(),
                )
            self._lost("restarting", quiet=True)
            if self._proc is not None and self._proc.poll() is None:
                _kill_and_reap(self._proc)  # closed its socket but did not exit
            return await self._start()

    async def _start(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = _popen_server(theirs.fileno())
        except OSError as e:
            ours.close()
            raise ForkServerError(f"cannot start the fork server: {e}", e.errno or 0) from e
        finally:
            theirs.close()
        self._started_once = True
        ours.setblocking(False)
        self._sock = ours
        self._ready = loop.create_future()
        loop.add_reader(ours.fileno(), self._on_readable)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                await asyncio.shield(self._ready)
        except TimeoutError:
            self._lost(f"not ready within {START_TIMEOUT_S:.0f} s", kill=True)
            raise ForkServerError(f"the fork server was not ready within {START_TIMEOUT_S:.0f} s") from None
        log.debug("forkserver.started", pid=self._proc.pid)
        return ours

    async def _send(self, sock: socket.socket, body: bytes, request_id: int) -> None:
        memfd = -1
        if len(body) > MAX_DATAGRAM:
            memfd = os.memfd_create("corral-launch", os.MFD_CLOEXEC)
            os.write(memfd, body)
            body = json.dumps({"id": request_id, "memfd": True}).encode()
        try:
            async with self._send_lock:
                while True:
                    try:
                        if memfd >= 0:
                            socket.send_fds(sock, [body], [memfd])
                        else:
                            sock.send(body)
                        return
                    except BlockingIOError:
                        async with asyncio.timeout(REPLY_TIMEOUT_S):
                            await _writable(sock)
        finally:
            if memfd >= 0:
                os.close(memfd)

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data, fds, flags, _ = socket.recv_fds(sock, 4096, _REPLY_FDS, socket.MSG_CMSG_CLOEXEC)
            except BlockingIOError:
                return
            except OSError as e:
                self._lost(f"cannot read from it: {e}")
                return
            if not data and not fds:
                self._lost("it exited")
                return
            try:
                if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                    raise ValueError("truncated")
                reply = json.loads(data)
                if not isinstance(reply, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                for fd in fds:
                    os.close(fd)
                self._lost(f"bad reply {data[:100]!r}: {e}", kill=True)
                return
            if reply.get("ready"):
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
                continue
            request_id = reply.get("id")
            fut = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
            if fut is None or fut.done():
                # The launch gave up waiting: nobody will use these.
                for fd in fds:
                    os.close(fd)
                continue
            fut.set_result((reply, fds))

    def _lost(self, reason: str, *, kill: bool = False, quiet: bool = False) -> None:
        """Forget the current server; fail what waits on it; reap it (killing if asked)."""
        sock, proc = self._sock, self._proc
        if sock is None:
            return
        self._sock = None
        with contextlib.suppress(ValueError, RuntimeError):  # loop already closed
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        if not quiet:
            log.warning("forkserver.lost", pid=None if proc is None else proc.pid, reason=reason)
        error = ForkServerError(f"the fork server was lost: {reason}")
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
            self._ready.exception()  # retrieved: _start may already have given up
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
        if proc is not None and (kill or proc.poll() is not None):
            _kill_and_reap(proc)


def _popen_server(fd: int) -> subprocess.Popen[bytes]:
    # Synchronous on purpose: Popen (vfork + exec, about 1 ms, once per server)
    # lets us reap with poll() and wait(timeout), where asyncio's subprocesses
    # would add a child-watcher thread per server on Python 3.11.
    # -I: no PYTHON* variables, user site or script directory on sys.path;
    # -S: no site-packages either, so nothing but the stdlib can load.
    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(SERVER_PATH), str(fd)],
        pass_fds=(fd,),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def _kill_and_reap(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    # SIGKILL'd, so this is quick; the bound only guards against a process
    # stuck in the kernel, which Popen then reaps on a later call.
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=1.0)


async def _writable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.add_writer(sock.fileno(), lambda: None if fut.done() else fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_writer(sock.fileno())
