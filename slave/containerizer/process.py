"""os-level helpers for the launcher's forked processes (supervisor, task child, init).

Standard library only, and nothing that logs, locks or imports: these run
after ``fork`` in a copy of a process whose other threads may have held any
lock (see launcher.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal

# Not typing.TYPE_CHECKING: importing typing would cost the fork server memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

EXIT_SETUP_FAILED = 126
EXIT_NOT_FOUND = 127
EXIT_SUPERVISOR_FAILED = 125

# Computed before any fork: resetting every handler means the task starts with
# the dispositions a fresh process has (Python ignores SIGPIPE and SIGXFSZ).
_SIGNALS = tuple(s for s in sorted(signal.valid_signals()) if s not in (signal.SIGKILL, signal.SIGSTOP))
_MAX_FD = os.sysconf("SC_OPEN_MAX")


def name_buffer(name: bytes) -> int:
    """The address of a buffer holding ``name``, made before any fork (for PR_SET_NAME)."""
    buf = ctypes.create_string_buffer(name)
    _KEEP.append(buf)
    return ctypes.addressof(buf)


_KEEP: list[ctypes.Array[ctypes.c_char]] = []


def reset_signals(ignore: tuple[int, ...] = ()) -> None:
    for sig in _SIGNALS:
        # Signals reserved by libc (32, 33) cannot be changed.
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_IGN if sig in ignore else signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def write_all(fd: int, data: bytes) -> None:
    # The agent may be gone; the status file still records the outcome.
    with contextlib.suppress(OSError):
        os.write(fd, data)


def close_fds_except(*keep: int) -> None:
    low = 3
    for fd in sorted(k for k in keep if k >= 0):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)


def fail(exec_w: int, stage: bytes, e: OSError) -> NoReturn:
    """Report ``cannot <stage>: <reason>`` on the exec pipe and exit."""
    reason = (e.strerror or os.strerror(e.errno or 0)).encode(errors="replace")
    write_all(exec_w, b"Ecannot " + stage + b": " + reason + b"\n")
    os._exit(EXIT_SETUP_FAILED)
