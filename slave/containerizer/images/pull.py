"""Pulling registry images into the store, on demand and by hand.

``Puller.obtain`` is what a launch asks for a registry reference, with the
task's pull policy (Kubernetes' names): ``if-not-present`` (the default: use
the stored image of that name, pull only when there is none), ``always``
(ask the registry which image the name means now; layers the store has are
not fetched again) and ``never`` (the store only). Two launches of one image
at once pull it once: the second waits for the first and then finds it; the
layers two images share are fetched once (one lock per layer digest).
A layer whose transfer fails or is cut short is fetched again, whole, up to
the client's retries; a failed pull leaves nothing in the store but what was
complete and verified (layers are renamed into place only then).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from corral.image_refs import ImageRefError, RemoteRef, parse_remote_ref
from corral.slave.containerizer.images.errors import ImageError
from corral.slave.containerizer.images.formats import parse_config
from corral.slave.containerizer.images.registry import Descriptor, RegistryClient, TransferError, describe
from corral.slave.containerizer.images.store import Image, ImageStore

log = structlog.get_logger(__name__)

POLICIES = ("if-not-present", "always", "never")


class Puller:
    """Pulls into ``store`` through ``client``; one per agent (or per `corral image pull`)."""

    def __init__(self, store: ImageStore, client: RegistryClient) -> None:
        self.store = store
        self.client = client
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        #: layers fetched from registries by this puller (the rest were in the store)
        self.layers_fetched = 0

    def obtain(self, image: str, policy: str = "if-not-present") -> Image:
        """(blocking) The image a task names by registry reference, per ``policy``."""
        if policy not in POLICIES:
            raise ImageError(f"pull policy {policy!r}: one of {', '.join(POLICIES)}")
        ref = _parse(image)
        if policy == "never":
            try:
                return self.store.resolve(ref.name)
            except ImageError:
                raise ImageError(
                    f"image {ref} is not in this agent's store and its pull policy is never "
                    f"(pull it there with `corral image pull {ref}`)"
                ) from None
        with self._lock(f"image {ref.name}"):
            if policy == "if-not-present" or ref.digest is not None:
                # A digest names one image for ever: having it is enough.
                try:
                    return self.store.resolve(ref.name)
                except ImageError:
                    pass
            return self._pull(ref)

    def pull(self, image: str) -> Image:
        """(blocking) Pull ``image`` now (``corral image pull``)."""
        ref = _parse(image)
        with self._lock(f"image {ref.name}"):
            return self._pull(ref)

    def _pull(self, ref: RemoteRef) -> Image:
        manifest = self.client.manifest(ref)
        log.info("image.pulling", image=ref.name, **describe(manifest))
        diff_ids, config = parse_config(self.client.blob_bytes(ref, manifest.config), str(ref))
        if len(diff_ids) != len(manifest.layers):
            raise ImageError(
                f"{ref}: the manifest lists {len(manifest.layers)} layers but the config has "
                f"{len(diff_ids)} diff_ids"
            )
        fetched = 0
        for i, (desc, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
            if self.store.layer_dir(diff_id).is_dir():
                continue
            with self._lock(f"layer {diff_id}"):
                if self.store.layer_dir(diff_id).is_dir():
                    continue  # another pull fetched it meanwhile
                self._fetch_layer(ref, i, desc, diff_id)
                fetched += 1
        names = (
            (ref.name,) if ref.digest else (ref.name, f"{ref.registry}/{ref.repository}@{manifest.digest}")
        )
        image = Image(
            manifest.config.digest, tuple(diff_ids), config, names, sum(d.size for d in manifest.layers)
        )
        self.store.record(image, f"registry {ref}", "registry")
        log.info("image.pulled", image=ref.name, id=image.id, layers_fetched=fetched, layers=len(diff_ids))
        return self.store.resolve(ref.name)

    def _fetch_layer(self, ref: RemoteRef, index: int, desc: Descriptor, diff_id: str) -> None:
        label = f"{index} ({desc.digest[:19]})"
        attempts = self.client.config.retries + 1
        for attempt in range(attempts):
            try:
                with self.client.blob(ref, desc) as stream:
                    self.store.add_layer(stream, diff_id, desc.digest, label, str(ref))
                with self._guard:
                    self.layers_fetched += 1
                return
            except TransferError as e:
                if attempt + 1 == attempts:
                    raise ImageError(f"{e} (tried {attempts} times)") from None
                log.warning("image.layer_retry", image=ref.name, layer=desc.digest, error=str(e))

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


def _parse(image: str) -> RemoteRef:
    try:
        return parse_remote_ref(image)
    except ImageRefError as e:
        raise ImageError(str(e)) from None
