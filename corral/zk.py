"""ZooKeeper plumbing shared by the master's election, the registry and the
detector: ``zk://`` URLs, kazoo clients, and the znode layout.

Layout under the cluster's path (DESIGN.md, "High availability"):

    <path>/leader/member_0000000007   ephemeral sequential, data = MasterInfo JSON
    <path>/registry/...                (the durable registry, later)

The lowest sequence number leads.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from kazoo.client import KazooClient

from corral.errors import CorralError

LEADER_DIR = "leader"
#: A dead leader is replaced about this long after it died (plus ~1.5 s), so
#: 5 s fails over in ~6.5 s: faster than the 4-8 s the Mesos paper reports for
#: its 10 s default, while a master must stall (not just be busy: kazoo pings
#: from its own thread) for over 3 s before its session is at risk. See
#: docs/operator.md.
DEFAULT_SESSION_TIMEOUT_S = 5.0
MEMBER_PREFIX = "member_"
_HOST_RE = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


class ZkUrlError(CorralError, ValueError):
    """A ``zk://`` URL is malformed."""


@dataclass(frozen=True)
class ZkUrl:
    hosts: str  # "h1:2181,h2:2181"
    path: str  # "/corral"

    @property
    def leader_dir(self) -> str:
        return f"{self.path.rstrip('/')}/{LEADER_DIR}"

    def __str__(self) -> str:
        return f"zk://{self.hosts}{self.path}"


def is_zk_url(value: str) -> bool:
    return value.startswith("zk://")


def parse_zk_url(value: str) -> ZkUrl:
    """``zk://h1:2181,h2:2181/corral`` → hosts and chroot path."""
    if not is_zk_url(value):
        raise ZkUrlError(f"{value!r}: a ZooKeeper URL starts with zk://")
    rest = value.removeprefix("zk://")
    hosts, slash, path = rest.partition("/")
    if not slash or not path.strip("/"):
        raise ZkUrlError(f"{value!r}: needs a path after the hosts, e.g. zk://h1:2181/corral")
    for host in hosts.split(","):
        if not _HOST_RE.match(host):
            raise ZkUrlError(f"{value!r}: {host!r} is not HOST:PORT")
    if any(not part or part in (".", "..") for part in path.strip("/").split("/")):
        raise ZkUrlError(f"{value!r}: bad path /{path}")
    return ZkUrl(hosts=hosts, path="/" + path.strip("/"))


def make_client(url: ZkUrl, session_timeout_s: float) -> KazooClient:
    """A kazoo client whose logs go through structlog (via stdlib logging)."""
    return KazooClient(
        hosts=url.hosts,
        timeout=session_timeout_s,
        logger=logging.getLogger("kazoo.client"),
    )


def encode_info(info: dict[str, Any]) -> bytes:
    return json.dumps(info, sort_keys=True).encode()


def decode_info(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def sequence_of(name: str) -> int:
    """``member_0000000007`` → 7; other names sort last."""
    digits = name.removeprefix(MEMBER_PREFIX)
    return int(digits) if name.startswith(MEMBER_PREFIX) and digits.isdigit() else 1 << 62
