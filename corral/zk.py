"""ZooKeeper plumbing shared by the master's election, the registry and the
detector: ``zk://`` URLs, kazoo clients, and the znode layout.

Layout under the cluster's path (DESIGN.md, "High availability"):

    <path>/leader/member_0000000007   ephemeral sequential, data = MasterInfo JSON
    <path>/registry/<kind>/<key>      the durable registry (master/registry.py)

The lowest sequence number leads.

**Access** (docs/operator.md, "Security"): masters given credentials
(``--zk-credentials FILE``, one ``user:password`` line, as Mesos'
``zk://user:pass@...``) authenticate with ZooKeeper's digest scheme and
create every znode with an ACL that gives that user everything: the path
and the leader's znodes are readable by anyone (agents, frameworks and the
CLI find the leader without credentials), the registry by nobody else. So a
task or a tenant that reaches ZooKeeper can neither pose as the leader nor
rewrite or read the registry. A tree made by masters without credentials is
taken over (its ACLs set) the first time a master with credentials starts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.errors import CorralError

# kazoo is imported where a client is made or an ACL computed: the CLI reads
# zk:// URLs (parse_zk_url) in every client command, most of which never dial
# ZooKeeper.
if TYPE_CHECKING:
    from kazoo.client import KazooClient
    from kazoo.security import ACL

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


class ZkCredentialsError(CorralError, ValueError):
    """A ZooKeeper credentials file is missing, open to others or malformed."""


class ZkAccessDenied(CorralError):
    """ZooKeeper refused this master a znode of the cluster's path (other credentials own it)."""


@dataclass(frozen=True)
class ZkCredentials:
    """The masters' ZooKeeper identity (digest scheme): one user all masters share."""

    user: str
    password: str = field(repr=False)

    @property
    def auth_data(self) -> list[tuple[str, str]]:
        return [("digest", f"{self.user}:{self.password}")]

    def private_acl(self) -> list[ACL]:
        """Everything for the masters, nothing for anyone else (the registry)."""
        from kazoo.security import make_digest_acl

        return [make_digest_acl(self.user, self.password, all=True)]

    def public_acl(self) -> list[ACL]:
        """Everything for the masters, reading for anyone (the path, the leader's znodes)."""
        from kazoo.security import READ_ACL_UNSAFE

        return self.private_acl() + list(READ_ACL_UNSAFE)


_USER_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def read_credentials(path: Path) -> ZkCredentials:
    """``user:password`` from ``path``, which only its owner may read (as ssh
    insists of a private key: the password is the registry's key)."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ZkCredentialsError(f"--zk-credentials {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ZkCredentialsError(f"--zk-credentials {path}: not UTF-8 text") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ZkCredentialsError(
            f"--zk-credentials {path}: readable by others (mode {stat.S_IMODE(st.st_mode):o}); chmod 600 it"
        )
    lines = [line for line in text.splitlines() if line.strip()]
    user, colon, password = (lines[0] if len(lines) == 1 else "").strip().partition(":")
    if len(lines) != 1 or not colon or not _USER_RE.match(user) or len(password) < 16:
        raise ZkCredentialsError(
            f"--zk-credentials {path}: expected one line USER:PASSWORD (user of letters, digits, "
            "'.', '_' or '-'; a password of at least 16 characters)"
        )
    return ZkCredentials(user, password)


def write_credentials(path: Path, user: str = "corral-master") -> ZkCredentials:
    """A new random password for ``user`` in ``path`` (mode 600); an existing
    file is read instead, so every master of a cluster shares one."""
    if path.exists():
        return read_credentials(path)
    creds = ZkCredentials(user, secrets.token_urlsafe(24))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{creds.user}:{creds.password}\n")
    return creds


def make_client(
    url: ZkUrl, session_timeout_s: float, credentials: ZkCredentials | None = None
) -> KazooClient:
    """A kazoo client whose logs go through structlog (via stdlib logging);
    with ``credentials`` it authenticates and creates znodes private to them
    unless told otherwise."""
    from kazoo.client import KazooClient

    return KazooClient(
        hosts=url.hosts,
        timeout=session_timeout_s,
        logger=logging.getLogger("kazoo.client"),
        auth_data=None if credentials is None else credentials.auth_data,
        default_acl=None if credentials is None else credentials.private_acl(),
    )


def _ensure_acl(client: KazooClient, path: str, acl: list[ACL]) -> bool | None:
    """Set ``path``'s ACL to ``acl``; True if it had another, False if it had
    this one, None if ``path`` does not exist."""
    from kazoo.exceptions import NoAuthError, NoNodeError

    try:
        current, _ = client.get_acls(path)
        if sorted(map(repr, current)) == sorted(map(repr, acl)):
            return False
        client.set_acls(path, acl)
    except NoNodeError:
        return None
    except NoAuthError:
        raise ZkAccessDenied(
            f"ZooKeeper refused this master {path}: other credentials own it "
            "(give every master the same --zk-credentials file)"
        ) from None
    return True


def secure_tree(
    client: KazooClient, url: ZkUrl, credentials: ZkCredentials, registry_kinds: tuple[str, ...]
) -> None:
    """(blocking) Give the cluster's existing znodes the ACLs a master with
    ``credentials`` creates them with: the path and the leader's znodes
    readable by anyone, the registry private. Raises
    ZkAccessDenied if other credentials own them."""
    public, private = credentials.public_acl(), credentials.private_acl()
    # The cluster's path, not its parents: those may be shared with other
    # applications, and ZooKeeper's ACLs do not inherit (a parent's ACL
    # guards only creating and deleting its direct children).
    _ensure_acl(client, url.path, public)
    if _ensure_acl(client, url.leader_dir, public):
        for name in client.get_children(url.leader_dir):
            _ensure_acl(client, f"{url.leader_dir}/{name}", public)
    # Under a private node only its owners can have created anything, so the
    # entries are visited only when their folder was open (a tree taken
    # over): a start costs a few round trips, not one per agent.
    root = f"{url.path.rstrip('/')}/registry"
    if _ensure_acl(client, root, private) is not None:
        for kind in registry_kinds:
            base = f"{root}/{kind}"
            if _ensure_acl(client, base, private):
                for name in client.get_children(base):
                    _ensure_acl(client, f"{base}/{name}", private)


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
