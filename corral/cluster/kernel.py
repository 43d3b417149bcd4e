"""The kernel calls a node's launcher makes: setns into the node's network
namespace, unshare a UTS namespace, set its hostname. One seam tests can
replace. Standard library only, like the containerizer's ``kernel.py`` (whose
package import would cost every node's launcher ~0.3 s of CPU); Python 3.11
has no ``os.setns``/``os.unshare``. Constants from <sched.h>."""

from __future__ import annotations

import ctypes
import os

CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_unshare = _libc.unshare
_unshare.argtypes = (ctypes.c_int,)
_sethostname = _libc.sethostname
_sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)


def _check(result: int, call: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{call}: {os.strerror(code)}")


def setns(fd: int, nstype: int) -> None:
    """Move this thread into the namespace ``fd`` refers to."""
    _check(_setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def sethostname(name: bytes) -> None:
    _check(_sethostname(name, len(name)), "sethostname")
