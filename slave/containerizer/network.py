"""Container networking, one function per mode, run in the container's init.

* ``host``: no network namespace; the task shares the host's interfaces.
* ``none``: a new network namespace holding only loopback, brought up here so
  that 127.0.0.1 works inside.
* ``bridge`` (later): a new namespace too, plus a veth pair whose host end the
  agent attaches to a bridge and whose container end gets its own IP; the host
  side will need a step in the agent before the task runs, which is why
  ``clone_flags`` and ``setup`` are separate.

Standard library only (loaded by the fork server through launcher.py).
"""

from __future__ import annotations

import fcntl
import socket
import struct

from . import kernel

MODES = ("host", "none")

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = "16sh22x"  # struct ifreq: name, then ifr_flags in the union (40 bytes)


def clone_flags(mode: str) -> int:
    """The unshare(2) flags the mode needs in the container's init."""
    return 0 if mode == "host" else kernel.CLONE_NEWNET


def setup(mode: str) -> None:
    """Configure the namespace the init has just unshared; raises OSError."""
    if mode == "host":
        return
    if mode == "none":
        _loopback_up()
        return
    raise OSError(22, f"unknown network mode {mode!r}")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack(_IFREQ, b"lo", 0)
        _, flags = struct.unpack(_IFREQ, fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, request))
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))
