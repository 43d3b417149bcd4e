"""``/etc/hostname``, ``/etc/hosts`` and ``/etc/resolv.conf`` for a container on an image.

An image's own copies describe the machine it was built on (or nothing:
busybox has none), so name resolution inside would fail. As Docker and Mesos'
network isolator do, each container gets its own, written by its init into
the container's upper layer before ``pivot_root`` (rootfs.py):

* ``hostname``: the container's (its UTS namespace's) hostname;
* ``hosts``: with the host's network, the host's file (the services it names
  are reachable), plus the container's hostname on 127.0.1.1 so it resolves;
  with no network, just loopback and that name;
* ``resolv.conf``: the host's, with the host's network; none without a network.

Computed here on the agent (host files are readable, logging is allowed); the
init only writes the bytes.
"""

from __future__ import annotations

from pathlib import Path

_LOOPBACK = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
_MAX_BYTES = 256 * 1024  # a host file bigger than this is not copied whole


def etc_files(hostname: str, network: str, host_etc: Path = Path("/etc")) -> tuple[tuple[bytes, bytes], ...]:
    """(name, content) for each file to write into the container's /etc."""
    name = hostname.encode()
    own = b"127.0.1.1\t" + name + b"\n"
    if network == "host":
        hosts = _read(host_etc / "hosts") or _LOOPBACK
        if not hosts.endswith(b"\n"):
            hosts += b"\n"
        out = [(b"hostname", name + b"\n"), (b"hosts", hosts + own)]
        resolv = _read(host_etc / "resolv.conf")
        if resolv is not None:
            out.append((b"resolv.conf", resolv))
        return tuple(out)
    return ((b"hostname", name + b"\n"), (b"hosts", _LOOPBACK + own))


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_BYTES)
    except OSError:
        return None
