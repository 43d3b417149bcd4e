"""The kernel calls a node's launcher makes: setns into the node's network
namespace, a new UTS namespace, its hostname. One seam tests can replace;
``unshare``/``sethostname`` are the containerizer's (Python 3.11 has no
``os.setns``)."""

from __future__ import annotations

import ctypes
import os

from corral.slave.containerizer.kernel import CLONE_NEWNET, CLONE_NEWUTS, sethostname, unshare

__all__ = ["CLONE_NEWNET", "CLONE_NEWUTS", "sethostname", "setns", "unshare"]

_setns = ctypes.CDLL(None, use_errno=True).setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_setns.restype = ctypes.c_int


def setns(fd: int, nstype: int) -> None:
    """Move this thread into the namespace ``fd`` refers to."""
    if _setns(fd, nstype) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")
