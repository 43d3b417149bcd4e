"""The fork server: a small process that forks container supervisors for the agent.

Run as ``python -I -S forkserver.py <socket fd>`` by forkserver_client.py, never
imported by the agent. Forking the agent itself (about 50 MB resident, 600 MB
mapped, grpc threads) made every launch copy and then tear down its page tables
and take copy-on-write faults; this process is a fresh interpreter holding only
the standard library and launcher.py, so a fork costs a fraction of that.

It must not import corral or anything from site-packages (``-S``): launcher.py
is loaded by file path under a private name. It does not log; on a fatal error
it writes one line to stderr (the agent's) and exits.

Protocol, over an AF_UNIX SOCK_SEQPACKET socket (one message per datagram):

* server -> agent, once: ``{"ready": true, "pid": <pid>}``.
* agent -> server: ``{"id": n, "spec": <launcher.spec_to_json>}``; a request too
  big for one datagram comes as ``{"id": n, "memfd": true}`` with a memfd that
  holds the JSON request.
* server -> agent: ``{"id": n, "pid": <supervisor pid>}`` with three fds
  (SCM_RIGHTS): the exec pipe's and the done pipe's read ends and a pidfd of
  the supervisor; or ``{"id": n, "error": "...", "errno": e}`` with no fds.

Requests are served in order, one at a time. The supervisors are this process's
children: SIGCHLD (through a wakeup fd) makes it reap them, so none is left a
zombie. EOF on the socket means the agent is gone or done: the server reaps what
has exited and leaves; running supervisors are setsid'd and outlive it.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import types

# Not typing.TYPE_CHECKING: importing typing would cost this process memory
# for nothing (mypy honours any constant of that name).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from corral.slave.containerizer import launcher

MAX_DATAGRAM = 64 * 1024  # larger requests go through a memfd
_REPLY_FDS = 3


_PACKAGE = "_corral_forkserver"


def _load_launcher() -> types.ModuleType:
    """launcher.py, loaded as a module of a nameless package made of this folder.

    launcher.py imports its siblings (kernel.py, network.py) relatively; the
    package's ``__init__`` is not run, so only stdlib-only modules are loaded.
    """
    package = types.ModuleType(_PACKAGE)
    package.__path__ = [os.path.dirname(os.path.abspath(__file__))]
    sys.modules[_PACKAGE] = package
    return importlib.import_module(f"{_PACKAGE}.launcher")


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _reply(sock: socket.socket, body: dict[str, object], fds: list[int] | tuple[int, ...] = ()) -> None:
    data = json.dumps(body).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def _read_request(sock: socket.socket) -> dict[str, object] | None:
    """The next request, or None at EOF."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_DATAGRAM, 1, socket.MSG_CMSG_CLOEXEC)
    if not data and not fds:
        return None
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ValueError("truncated request")
        request = json.loads(data)
        if not isinstance(request, dict):
            raise ValueError("request is not an object")
        if request.get("memfd"):
            if len(fds) != 1:
                raise ValueError("memfd request without its fd")
            request = json.loads(os.pread(fds[0], os.fstat(fds[0]).st_size, 0))
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
        return request
    finally:
        for fd in fds:
            os.close(fd)


def _serve_one(sock: socket.socket, request: dict[str, object]) -> None:
    request_id = request.get("id")
    try:
        spec_json = request.get("spec")
        if not isinstance(spec_json, dict):
            raise ValueError("no spec")
        spec = launcher.spec_from_json(spec_json)
    except (ValueError, UnicodeError) as e:
        _reply(sock, {"id": request_id, "error": f"bad request: {e}", "errno": errno.EINVAL})
        return
    try:
        spawned = launcher.spawn(spec)
    except OSError as e:
        _reply(sock, {"id": request_id, "error": str(e), "errno": e.errno or 0})
        return
    fds = [spawned.exec_fd, spawned.done_fd]
    try:
        # Opened before the next _reap, so it cannot name a recycled pid.
        fds.append(os.pidfd_open(spawned.supervisor_pid))
        _reply(sock, {"id": request_id, "pid": spawned.supervisor_pid}, fds)
    except OSError as e:
        if len(fds) < _REPLY_FDS:
            # Without a pidfd the agent could not tell when the supervisor ends;
            # the task it may have forked is in its cgroup, which the agent cleans.
            os.kill(spawned.supervisor_pid, signal.SIGKILL)
        if e.errno in (errno.EPIPE, errno.ECONNRESET):
            raise  # the agent is gone
        _reply(sock, {"id": request_id, "error": str(e), "errno": e.errno or 0})
    finally:
        for fd in fds:
            os.close(fd)


def serve(sock: socket.socket) -> None:
    # Bound here rather than imported: the corral package is not importable.
    globals()["launcher"] = _load_launcher()
    launcher.set_process_name(b"corral-forksrv")
    # Nothing here makes cycles, and a collection in a child could run finalisers
    # between fork and exec; freezing also keeps children from dirtying the heap.
    gc.disable()
    gc.freeze()
    # The agent decides when this process ends (by closing the socket): a Ctrl-C
    # to the agent's process group must not take it down mid-request.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    # A Python handler is what makes the interpreter write to the wakeup fd.
    signal.signal(signal.SIGCHLD, lambda _sig, _frame: None)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    _reply(sock, {"ready": True, "pid": os.getpid()})
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_r, 4096):
                            pass
                    continue
                try:
                    request = _read_request(sock)
                except ValueError as e:
                    _reply(sock, {"id": None, "error": f"bad request: {e}", "errno": errno.EINVAL})
                    continue
                if request is None:
                    return
                _serve_one(sock, request)
            _reap()
    except (BrokenPipeError, ConnectionResetError):
        return
    finally:
        _reap()


def main(argv: list[str]) -> int:
    try:
        sock = socket.socket(fileno=int(argv[1]))
        serve(sock)
    except Exception as e:
        sys.stderr.write(f"corral fork server {os.getpid()}: fatal: {type(e).__name__}: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
