"""The user namespace isolator: a range of unprivileged host ids per container.

A container with ``isolation.user_namespace`` runs in a user namespace whose
ids 0..65535 are host ids ``base``..``base+65535`` (the launcher makes the
namespace, idmaps the sandbox and the image's layers onto it and enters it
before exec: launcher.py, task_setup.py). This isolator only hands out the
ranges, so that no two containers on this host ever share host ids (they
could otherwise signal, ptrace or read each other's files).

Ranges are claimed host-wide, not per agent: several agents (and test runs)
on one host share one registry directory (``/run/corral/userns`` by
default: a tmpfs, so it is empty after a reboot, as every container is
gone). A claim is a file named for the range's base, created with
``O_EXCL`` under an ``flock``, holding the meta dir of the container that
has it; a claim whose meta dir no longer exists (its agent died and its work
dir was wiped) is stale and reclaimed when no free range is left. The claim
is checkpointed in the container's meta dir (``userns.json``), so a
restarted agent keeps the range of a container it recovers.

The default ids (2^30 + k * 65536, 1,024 ranges) are far above the ids
``/etc/subuid`` and ``useradd`` hand out; an operator must keep them out of
``/etc/passwd``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import structlog

from corral.slave.containerizer import checkpoint
from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.isolator import IdRange, Isolator, Prepared, Running
from corral.slave.containerizer.model import ContainerConfig

log = structlog.get_logger(__name__)

RANGE_SIZE = 65536
FIRST_ID = 1 << 30
RANGES = 1024
REGISTRY = Path("/run/corral/userns")
RECORD = "userns.json"


def host_supports_userns() -> str | None:
    """Why this host cannot give containers user namespaces, or None if it can."""
    if not Path("/proc/self/ns/user").exists():
        return "this kernel has no user namespaces"
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        limit = 1
    if limit <= 0:
        return "user namespaces are disabled (/proc/sys/user/max_user_namespaces is 0)"
    return None


class UserNamespaceIsolator(Isolator):
    name: ClassVar[str] = "namespaces/user"

    def __init__(self, registry: Path = REGISTRY, first_id: int = FIRST_ID, ranges: int = RANGES) -> None:
        if first_id < RANGE_SIZE or first_id + ranges * RANGE_SIZE > 2**32 - 1:
            raise ContainerError(
                f"user namespace ids {first_id} + {ranges} x {RANGE_SIZE} do not fit in uid_t"
            )
        self.registry = registry
        self.first_id = first_id
        self.ranges = ranges
        self._held: dict[str, tuple[IdRange, Path]] = {}  # container id -> (range, claim file)
        self._unsupported: str | None = None
        self._probed = False

    def prepare(self, config: ContainerConfig, meta_dir: Path) -> Prepared:
        if not config.isolation.user_namespace:
            return Prepared()
        if not self._probed:
            self._unsupported = host_supports_userns()
            self._probed = True
        if self._unsupported is not None:
            raise ContainerError(f"isolation.user_namespace: {self._unsupported}")
        iso = config.isolation
        ids = (*(iso.user or ()), *iso.groups)
        if any(i >= RANGE_SIZE for i in ids):
            raise ContainerError(
                f"isolation.user: in a user namespace ids must be below {RANGE_SIZE}, got {max(ids)}"
            )
        claimed, claim = self._claim(meta_dir)
        try:
            checkpoint.write_json(meta_dir / RECORD, {"base": claimed.base, "size": claimed.size})
        except OSError as e:
            claim.unlink(missing_ok=True)
            raise ContainerError(f"cannot record the user namespace of {config.container_id!r}: {e}") from e
        self._held[config.container_id] = (claimed, claim)
        log.debug("container.userns_claimed", container_id=config.container_id, base=claimed.base)
        return Prepared(userns=claimed)

    def recover(self, container: Running) -> None:
        record = checkpoint.read_json(container.meta_dir / RECORD)
        if record is None or not isinstance(record.get("base"), int):
            return
        base = int(record["base"])
        ids = IdRange(base, int(record.get("size", RANGE_SIZE)))
        claim = self.registry / str(base)
        # The claim file survives an agent restart (it lives in /run); one lost
        # with the registry is made again so that nobody else takes the range.
        with self._locked(), contextlib.suppress(FileExistsError):
            self._write_claim(claim, container.meta_dir)
        self._held[container.container_id] = (ids, claim)

    def release_leftover(self, meta_dir: Path) -> None:
        """Free the range of a container an earlier agent left (its processes are gone)."""
        record = checkpoint.read_json(meta_dir / RECORD)
        if record is None or not isinstance(record.get("base"), int):
            return
        claim = self.registry / str(record["base"])
        with self._locked(), contextlib.suppress(OSError):
            # Only if the claim is still this container's: a stale one may
            # have been reclaimed and handed to another since.
            if claim.read_bytes() == os.fsencode(meta_dir):
                claim.unlink()

    def held(self, container_id: str) -> IdRange | None:
        entry = self._held.get(container_id)
        return None if entry is None else entry[0]

    def cleanup(self, container_id: str) -> None:
        entry = self._held.pop(container_id, None)
        if entry is not None:
            entry[1].unlink(missing_ok=True)

    # -- the host-wide registry ------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.registry.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.registry / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _claim(self, meta_dir: Path) -> tuple[IdRange, Path]:
        try:
            with self._locked():
                taken = set(os.listdir(self.registry))
                for attempt in range(2):  # then once more after reclaiming stale claims
                    for k in range(self.ranges):
                        base = self.first_id + k * RANGE_SIZE
                        if str(base) in taken:
                            continue
                        claim = self.registry / str(base)
                        with contextlib.suppress(FileExistsError):
                            self._write_claim(claim, meta_dir)
                            return IdRange(base, RANGE_SIZE), claim
                    if attempt == 0:
                        taken -= self._reclaim_stale(taken)
        except OSError as e:
            raise ContainerError(
                f"isolation.user_namespace: cannot claim host ids in {self.registry}: {e}"
            ) from e
        raise ContainerError(f"isolation.user_namespace: all {self.ranges} id ranges of this host are in use")

    @staticmethod
    def _write_claim(claim: Path, meta_dir: Path) -> None:
        fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, os.fsencode(meta_dir))
        finally:
            os.close(fd)

    def _reclaim_stale(self, taken: set[str]) -> set[str]:
        """Remove claims whose container's meta dir is gone; return their names."""
        freed = set()
        for name in taken:
            if not name.isdigit():
                continue
            claim = self.registry / name
            try:
                owner = Path(os.fsdecode(claim.read_bytes()))
            except OSError:
                continue
            if not owner.is_dir():
                claim.unlink(missing_ok=True)
                freed.add(name)
                log.info("container.userns_reclaimed", base=int(name), meta_dir=str(owner))
        return freed
