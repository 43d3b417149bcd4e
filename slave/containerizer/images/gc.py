"""Garbage collection of the image store: a pure plan and a small shell.

Pulled images pile up on an agent: every tag a task names stays until
someone removes it. As the kubelet's image GC (``imageGCHighThresholdPercent``
85, ``imageGCLowThresholdPercent`` 80) and Mesos' ``--image_gc_config``
(``image_disk_headroom``), the agent removes the least recently used images
no container uses once the store passes a budget, until it is back under a
lower mark:

- the **budget** is either a size (``--image-gc-budget 20GiB``) or, by
  default, 85% of the store's filesystem; collection goes down to 80% of it;
- only images that can come back are candidates: those pulled from a
  registry (an image imported by hand from a tarball may have no other
  copy) unless ``include_imported``; never an image a container leases or
  mounts, nor one whose layers such a container shares (removing it frees
  nothing);
- least recently used first: the time a container last leased the image
  (``used/<hex>`` in the store, touched at each lease), else when it was
  pulled.

:func:`plan` is pure (tests/unit/test_image_gc.py checks its invariants over
generated stores); :func:`collect` measures, plans and removes through
``ImageStore.remove``, under the store's own locking.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from corral.slave.containerizer.disk import usage_bytes
from corral.slave.containerizer.images.errors import ImageError
from corral.slave.containerizer.images.store import ImageStore

log = structlog.get_logger(__name__)

#: the kubelet's defaults: collect above 85% of the disk, down to 80%
HIGH_FRACTION = 0.85
LOW_FRACTION = 0.80
#: an image pulled or used more recently is kept (the kubelet's
#: ImageMinimumGCAge): a launch between its pull and its lease keeps it
MIN_AGE_S = 120.0


_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?)?B?", re.IGNORECASE)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """``20GiB``, ``500Mi``, ``1.5G``, ``123456`` in bytes (Ki/Mi/Gi/Ti binary,
    K/M/G/T decimal, as Kubernetes quantities); ValueError names the forms."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a size such as 20GiB, 500MiB or 1.5G")
    unit = (m[2] or "").lower()
    scale = 1024 ** " kmgt".index(unit[0]) if unit.endswith("i") else _UNITS[unit]
    return int(float(m[1]) * scale)


@dataclass(frozen=True)
class Candidate:
    """An image as the plan sees it."""

    id: str
    layers: tuple[str, ...]  # hex digests
    last_used: float
    #: pulled from a registry (can be pulled again)
    pulled: bool


@dataclass(frozen=True)
class Plan:
    remove: tuple[str, ...]  # image ids, least recently used first
    freed_bytes: int
    size_before: int
    size_after: int


def plan(
    images: Sequence[Candidate],
    layer_sizes: Mapping[str, int],
    in_use: set[str],
    high_bytes: int,
    low_bytes: int,
    include_imported: bool = False,
    now: float = float("inf"),
    min_age_s: float = MIN_AGE_S,
) -> Plan:
    """Which images to remove: none while the layers total at most
    ``high_bytes``; else, least recently used first, the removable ones until
    the total is at most ``low_bytes`` (or none is left to remove). A layer
    is freed once no kept image and no container (``in_use``) needs it."""
    size = sum(layer_sizes.values())
    if size <= high_bytes:
        return Plan((), 0, size, size)
    users: dict[str, int] = {}
    for image in images:
        for layer in set(image.layers):
            users[layer] = users.get(layer, 0) + 1
    removed: list[str] = []
    freed = 0
    for image in sorted(images, key=lambda i: (i.last_used, i.id)):
        if size - freed <= low_bytes:
            break
        if not (image.pulled or include_imported) or in_use & set(image.layers):
            continue
        if now - image.last_used < min_age_s:
            continue
        removed.append(image.id)
        for layer in set(image.layers):
            users[layer] -= 1
            if users[layer] == 0:
                freed += layer_sizes.get(layer, 0)
    return Plan(tuple(removed), freed, size, size - freed)


def thresholds(store_root: Path, layers_bytes: int, budget_bytes: int | None) -> tuple[int, int]:
    """(high, low) marks for the layers' total: with a budget, the budget and
    80/85 of it; else the kubelet's rule on the whole filesystem the store
    is on (collect once it is 85% full, down to 80%), as layer totals."""
    if budget_bytes is not None:
        return budget_bytes, int(budget_bytes * LOW_FRACTION / HIGH_FRACTION)
    st = os.statvfs(store_root)
    total = st.f_blocks * st.f_frsize
    used = total - st.f_bavail * st.f_frsize
    return layers_bytes + int(HIGH_FRACTION * total) - used, layers_bytes - (used - int(LOW_FRACTION * total))


def layer_sizes(layers_root: Path, cache_root: Path, layers: Iterable[str]) -> dict[str, int]:
    """Each layer's size on disk, measured once (layers never change) and
    kept in ``cache_root/<hex>``."""
    out: dict[str, int] = {}
    cache_root.mkdir(parents=True, exist_ok=True)
    for hexd in layers:
        cached = cache_root / hexd
        try:
            out[hexd] = int(cached.read_text())
            continue
        except (OSError, ValueError):
            pass
        layer = layers_root / hexd
        if not layer.is_dir():
            continue
        size = usage_bytes(layer)
        tmp = cache_root / f".{hexd}.{os.getpid()}.tmp"
        tmp.write_text(str(size))
        os.rename(tmp, cached)
        out[hexd] = size
    return out


def collect(
    store: ImageStore,
    budget_bytes: int | None = None,
    include_imported: bool = False,
    dry_run: bool = False,
    min_age_s: float = MIN_AGE_S,
) -> Plan:
    """Measure the store, plan, and (unless ``dry_run``) remove what the plan
    names; an image a container leased meanwhile is left alone."""
    images = store.images()
    if not images:
        return Plan((), 0, 0, 0)  # (and nothing made on disk for a store never used)
    hexes = {d.removeprefix("sha256:") for image in images for d in image.layers}
    sizes = layer_sizes(store.layers_root, store.sizes_dir, sorted(hexes))
    for stale in store.sizes_dir.iterdir() if store.sizes_dir.is_dir() else []:
        if not stale.name.startswith(".") and stale.name not in hexes:
            stale.unlink(missing_ok=True)  # a layer removed since it was measured
    candidates = [
        Candidate(
            image.id,
            tuple(d.removeprefix("sha256:") for d in image.layers),
            image.last_used or image.added_at,
            image.pulled,
        )
        for image in images
    ]
    total = sum(sizes.values())
    high, low = thresholds(store.root if store.root.exists() else store.root.parent, total, budget_bytes)
    chosen = plan(candidates, sizes, store.layers_held(), high, low, include_imported, time.time(), min_age_s)
    if dry_run or not chosen.remove:
        return chosen
    done: list[str] = []
    for image_id in chosen.remove:
        try:
            removed = store.remove(image_id, only_if_unused=True)
        except ImageError as e:  # removed meanwhile (a concurrent `corral image rm`)
            log.info("image.gc_skipped", image=image_id, why=str(e))
            continue
        if removed.image is not None:
            done.append(image_id)
    after = 0
    for hexd, size in sizes.items():
        if (store.layers_root / hexd).is_dir():
            after += size
        else:
            (store.sizes_dir / hexd).unlink(missing_ok=True)
    log.info("image.gc", removed=len(done), freed_bytes=total - after, size_bytes=after, high=high, low=low)
    return Plan(tuple(done), total - after, total, after)


def collect_quietly(store: ImageStore, budget_bytes: int | None) -> Plan | None:
    """:func:`collect` for the agent's background round: a failure is logged
    (the next round tries again), never raised into the agent."""
    try:
        return collect(store, budget_bytes)
    except (OSError, ImageError) as e:
        log.warning("image.gc_failed", store=str(store.root), error=str(e))
        return None
