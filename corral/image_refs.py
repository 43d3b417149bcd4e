"""Registry image references: ``HOST[:PORT]/REPO[:TAG|@sha256:HEX]``.

Pure, and shared: the master validates them, placement knows an agent can
pull one it does not have, the agent's puller (slave/containerizer/images/
pull.py) fetches them. A reference names its registry when its first path
part has a dot or a port or is ``localhost`` (Docker's rule); there is no
default registry, so a bare ``NAME[:TAG]`` stays a name in an agent's store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from corral.errors import CorralError

#: a content digest as images name them (the only algorithm corral accepts)
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_REPO_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST_RE = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?")


class ImageRefError(CorralError, ValueError):
    """A registry reference is malformed; the message says which part."""


@dataclass(frozen=True)
class RemoteRef:
    """``registry/repository`` and a tag or a digest."""

    registry: str  # host[:port]
    repository: str  # e.g. "library/busybox"
    tag: str = "latest"
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What the manifest URL ends with: the digest when pinned, else the tag."""
        return self.digest or self.tag

    @property
    def name(self) -> str:
        """The store's name for it: ``host/repo:tag``, or ``host/repo@sha256:…`` when pinned."""
        return f"{self.registry}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")

    def __str__(self) -> str:
        return self.name


def is_remote_ref(image: str) -> bool:
    """Whether ``image`` names a registry (its first path part is a host)."""
    first, slash, _ = image.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def parse_remote_ref(image: str) -> RemoteRef:
    """``HOST[:PORT]/REPO[:TAG][@sha256:HEX]``; ImageError saying what is wrong."""
    if not is_remote_ref(image):
        raise ImageRefError(f"image {image!r}: not a registry reference (HOST[:PORT]/REPO[:TAG|@DIGEST])")
    host, _, rest = image.partition("/")
    digest = None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not DIGEST_RE.fullmatch(digest):
            raise ImageRefError(f"image {image!r}: the digest must be sha256:<64 lowercase hex>")
    repo, tag = rest, "latest"
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        repo, _, tag = rest.rpartition(":")
        if not _TAG_RE.fullmatch(tag):
            raise ImageRefError(f"image {image!r}: bad tag {tag!r}")
    if not _HOST_RE.fullmatch(host):
        raise ImageRefError(f"image {image!r}: bad registry host {host!r}")
    if not _REPO_RE.fullmatch(repo) or len(repo) > 255:
        raise ImageRefError(f"image {image!r}: bad repository {repo!r} (lowercase letters, digits, '._-/')")
    return RemoteRef(host, repo, tag, digest)
