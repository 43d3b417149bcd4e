"""The content-addressed image store shared by the agents of a host and ``corral image``.

Layout under the store's root::

    layers/sha256/<hex>/          one unpacked layer, keyed by the sha256 of its
                                  uncompressed tar (the config's diff_id), so the
                                  same layer from an OCI and a docker-save tarball
                                  is stored once
    images/sha256/<hex>.json      an image: its layer chain (bottom first) and the
                                  config a container needs; <hex> is its config digest
    refs.json                     name:tag -> image id
    tmp/                          layers being unpacked
    leases/<hash>                 the path of a container's lease file (a launch's
                                  layers, kept until that file is gone)
    used/<hex>                    touched when a container leases the image (its
                                  mtime: last use, for garbage collection, gc.py)
    sizes/<hex>                   a layer's size on disk, measured once (gc.py)
    lock                          flock(2): shared to lease layers, exclusive to
                                  write records and refs and to remove

A layer is unpacked into ``tmp/`` while its digest is computed, and renamed into
``layers/`` only when the digest matches: a layer directory, once it exists, is
complete and verified, and it is never modified. Two importers of the same
layer (agents on first use, ``corral image import``) both unpack it; the first
rename wins and the other drops its copy. Readers take no lock: records and
refs are replaced by rename.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from corral.image_refs import DIGEST_RE
from corral.slave.containerizer.images.errors import ImageError
from corral.slave.containerizer.images.formats import ImageConfig, LayerRef, normal_member, read_manifest
from corral.slave.containerizer.images.imports import open_import
from corral.slave.containerizer.images.layers import ByteStream, unpack_verified

log = structlog.get_logger(__name__)

DEFAULT_STORE = Path("/var/lib/corral/images")
_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}")
_ID_PREFIX_RE = re.compile(r"(sha256:)?[0-9a-f]{12,64}")
_STALE_TMP_S = 24 * 3600
_CHUNK = 1 << 20


def default_store_dir() -> Path:
    """``$CORRAL_IMAGE_STORE``, else ``$CORRAL_HOME/images``, else /var/lib/corral/images."""
    if os.environ.get("CORRAL_IMAGE_STORE"):
        return Path(os.environ["CORRAL_IMAGE_STORE"])
    if os.environ.get("CORRAL_HOME"):
        return Path(os.environ["CORRAL_HOME"]) / "images"
    return DEFAULT_STORE


def is_path_ref(image: str) -> bool:
    """A task's image names a tarball (imported on first use) when it is an absolute path."""
    return image.startswith("/")


def normalize_ref(ref: str) -> str:
    """``name`` → ``name:latest``; ``name@sha256:<hex>`` (a pulled image's
    digest) as it is; raises ImageError for anything else."""
    name, at, digest = ref.partition("@")
    if at and DIGEST_RE.fullmatch(digest) and _REF_RE.fullmatch(name) and ".." not in name:
        return ref
    if not _REF_RE.fullmatch(ref) or ".." in ref or ref.endswith((":", "/")):
        raise ImageError(f"image name {ref!r}: must look like NAME[:TAG] (letters, digits, '._/-')")
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else ref + ":latest"


@dataclass(frozen=True)
class Image:
    """An image in the store."""

    id: str  # sha256:<hex> of its config
    layers: tuple[str, ...]  # diff_ids, bottom first
    config: ImageConfig
    names: tuple[str, ...] = ()
    size_bytes: int = 0  # of the tarball it was imported from
    #: how it came: "registry" (pulled), else the tarball's format
    format: str = ""
    #: when it was recorded, and when a container last leased it (0: never)
    added_at: float = 0.0
    last_used: float = 0.0

    @property
    def pulled(self) -> bool:
        return self.format == "registry"


@dataclass(frozen=True)
class Removed:
    refs: tuple[str, ...]
    image: str | None  # the image id, if its record went too
    layers: tuple[str, ...]  # layers deleted
    layers_in_use: tuple[str, ...]  # layers kept because a container mounts them


class ImageStore:
    """Images and layers under ``root`` (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._layers = root / "layers" / "sha256"
        self._images = root / "images" / "sha256"
        self._refs = root / "refs.json"
        self._tmp = root / "tmp"
        self._leases = root / "leases"
        self._used = root / "used"
        #: where gc.py keeps measured layer sizes
        self.sizes_dir = root / "sizes"

    # -- reading ---------------------------------------------------------------

    def layer_dir(self, diff_id: str) -> Path:
        return self._layers / diff_id.removeprefix("sha256:")

    @property
    def layers_root(self) -> Path:
        return self._layers

    def layers_held(self) -> set[str]:
        """Hex digests of the layers a container leases or mounts now."""
        if not self.root.is_dir():
            return set()
        with self._locked(shared=True):
            return layers_in_use(self._layers) | self._leased()

    def layer_dirs(self, image: Image) -> tuple[Path, ...]:
        """The image's layer directories, bottom first; ImageError if one is missing."""
        dirs = tuple(self.layer_dir(d) for d in image.layers)
        for i, d in enumerate(dirs):
            if not d.is_dir():
                raise ImageError(
                    f"image {image.id}: layer {i} ({image.layers[i]}) is missing from the store "
                    f"{self.root}; import the image again"
                )
        return dirs

    def refs(self) -> dict[str, str]:
        try:
            data = json.loads(self._refs.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise ImageError(f"image store {self.root}: refs.json is unreadable: {e}") from None
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}

    def images(self) -> list[Image]:
        """Every image in the store, with its names."""
        refs = self.refs()
        out = []
        for path in sorted(self._images.glob("*.json")) if self._images.is_dir() else []:
            image = self._load("sha256:" + path.stem)
            if image is not None:
                out.append(self._named(image, refs))
        return out

    def resolve(self, ref: str) -> Image:
        """The image named ``ref`` (NAME[:TAG], or its id or an id prefix of 12+ hex digits)."""
        refs = self.refs()
        if _ID_PREFIX_RE.fullmatch(ref):
            hexd = ref.removeprefix("sha256:")
            found = [p.stem for p in self._images.glob(f"{hexd}*.json")] if self._images.is_dir() else []
            if len(found) > 1:
                raise ImageError(f"image id {ref!r} is ambiguous: {len(found)} images start with it")
            if found:
                image = self._load("sha256:" + found[0])
                if image is not None:
                    return self._named(image, refs)
        name = normalize_ref(ref)
        image_id = refs.get(name)
        image = self._load(image_id) if image_id else None
        if image is None:
            raise ImageError(
                f"image {ref!r} is not in the image store {self.root} "
                f"(import it with `corral image import FILE --name {name}`)"
            )
        return self._named(image, refs)

    def obtain(self, image: str, import_dirs: tuple[Path, ...] = ()) -> Image:
        """What a task's ``image`` field names: a tarball path (imported now) or a stored image.

        A path is accepted only under one of ``import_dirs`` (the agent's
        ``--image-import-dir``), walked without following any symlink, and
        only a regular file: a task must not make the agent read a root-only
        file, another task's file or a FIFO. A tarball imported this way is not
        tagged with the names it carries: a task must not move the operator's tags.
        """
        if is_path_ref(image):
            with open_import(image, import_dirs) as f:
                return self.import_tarball(Path(image), tag=False, fileobj=f)
        return self.resolve(image)

    def _load(self, image_id: str) -> Image | None:
        path = self._images / (image_id.removeprefix("sha256:") + ".json")
        try:
            data = json.loads(path.read_text())
            try:
                last_used = (self._used / path.stem).stat().st_mtime
            except OSError:
                last_used = 0.0
            return Image(
                id=data["id"],
                layers=tuple(data["layers"]),
                config=ImageConfig.from_json(data["config"], str(path)),
                size_bytes=int(data.get("size_bytes", 0)),
                format=str(data.get("format", "")),
                added_at=float(data.get("imported_at", 0.0)),
                last_used=last_used,
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ImageError(f"image record {path} is unreadable: {e}") from None

    @staticmethod
    def _named(image: Image, refs: dict[str, str]) -> Image:
        names = tuple(sorted(n for n, i in refs.items() if i == image.id))
        return dataclasses.replace(image, names=names)

    # -- writing ---------------------------------------------------------------

    def import_tarball(
        self, path: Path, name: str | None = None, *, tag: bool = True, fileobj: IO[bytes] | None = None
    ) -> Image:
        """Import an OCI image-layout or docker-save tarball; tag it ``name`` (else the names it
        carries; none when ``tag`` is false).

        Layers already in the store are not read again. Raises ImageError naming
        the file, and the layer when a digest does not match.
        """
        source = str(path)
        wanted = normalize_ref(name) if name else None
        self._prepare()
        try:
            tar = tarfile.open(path, "r:*", fileobj=fileobj)  # noqa: SIM115 (closed by the with below)
        except FileNotFoundError:
            raise ImageError(f"{source}: no such image file") from None
        except tarfile.ReadError:
            raise ImageError(f"{source}: not a readable tarball (plain, gzip, bzip2 or xz tar)") from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise ImageError(f"{source}: not a readable tarball: {e}") from None
        with tar:
            try:
                manifest = read_manifest(tar, source, wanted)
                members = {normal_member(m.name): m for m in tar.getmembers()}
                for i, layer in enumerate(manifest.layers):
                    self._ensure_layer(tar, members, layer, i, source)
            except (tarfile.TarError, EOFError, zlib.error) as e:
                raise ImageError(f"{source}: corrupt tarball: {e}") from None
        size = os.fstat(fileobj.fileno()).st_size if fileobj is not None else path.stat().st_size
        names = (wanted,) if wanted else tuple(normalize_ref(n) for n in manifest.names) if tag else ()
        image = Image(
            manifest.image_id, tuple(layer.diff_id for layer in manifest.layers), manifest.config, names, size
        )
        self.record(image, os.path.abspath(source), manifest.format)
        log.info("image.imported", image=manifest.image_id, names=list(names), layers=len(manifest.layers))
        return image

    def record(self, image: Image, source: str, fmt: str) -> None:
        """Keep ``image`` (its layers already added) and point its names at it."""
        record = {
            "id": image.id,
            "layers": list(image.layers),
            "config": image.config.to_json(),
            "format": fmt,
            "source": source,
            "size_bytes": image.size_bytes,
            "imported_at": time.time(),
        }
        record_path = self._images / (image.id.removeprefix("sha256:") + ".json")
        with self._locked():
            # Under the lock `rm` takes: a layer it removed meanwhile is not recorded as present.
            for i, layer in enumerate(image.layers):
                if not self.layer_dir(layer).is_dir():
                    raise ImageError(
                        f"{source}: layer {i} ({layer}) was removed while importing "
                        f"(a concurrent `corral image rm`); import again"
                    )
            if not record_path.exists() or image.names:
                _write_json(record_path, record)
            if image.names:
                refs = self.refs()
                refs.update(dict.fromkeys(image.names, image.id))
                _write_json(self._refs, refs)

    def remove(self, ref: str, only_if_unused: bool = False) -> Removed:
        """Untag ``ref`` (all names of the image if ``ref`` is its id); drop the image
        once nameless, and the layers no other image uses and no container mounts.
        ``only_if_unused`` (garbage collection): leave it all if a container
        leases or mounts one of its layers now."""
        self._make_root()
        self._tmp.mkdir(parents=True, exist_ok=True)
        with self._locked():
            image = self.resolve(ref)
            if only_if_unused and {d.removeprefix("sha256:") for d in image.layers} & (
                layers_in_use(self._layers) | self._leased()
            ):
                return Removed((), None, (), image.layers)
            refs = self.refs()
            by_id = _ID_PREFIX_RE.fullmatch(ref) is not None and ref not in refs
            dropped = image.names if by_id else (normalize_ref(ref),)
            for n in dropped:
                refs.pop(n, None)
            _write_json(self._refs, refs)
            if image.id in refs.values():
                return Removed(tuple(dropped), None, (), ())
            (self._images / (image.id.removeprefix("sha256:") + ".json")).unlink(missing_ok=True)
            (self._used / image.id.removeprefix("sha256:")).unlink(missing_ok=True)
            still_used = {layer for other in self.images() for layer in other.layers}
            in_use = layers_in_use(self._layers) | self._leased()
            removed, kept = [], []
            for layer in dict.fromkeys(image.layers):
                hexd = layer.removeprefix("sha256:")
                if layer in still_used:
                    continue
                if hexd in in_use:
                    kept.append(layer)
                    continue
                src = self._layers / hexd
                if src.is_dir():
                    # Out of layers/ in one step, so no reader sees half a layer.
                    doomed = Path(tempfile.mkdtemp(prefix="rm-", dir=self._tmp))
                    os.rename(src, doomed / "layer")
                    shutil.rmtree(doomed, ignore_errors=True)
                    removed.append(layer)
        log.info("image.removed", image=image.id, refs=list(dropped), layers=len(removed), in_use=len(kept))
        return Removed(tuple(dropped), image.id, tuple(removed), tuple(kept))

    def _make_root(self) -> None:
        # 0700: layers may hold setuid binaries no host user may reach (CVE-2021-41091).
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.root.stat().st_mode & 0o077:
            os.chmod(self.root, 0o700)

    def lease(self, image: Image, holder: Path) -> tuple[Path, ...]:
        """Keep ``image``'s layers from ``rm`` while the file ``holder`` exists (a container's
        ``containers/<id>/layers``, removed with it); return the layer directories.

        Checked and written under the shared store lock, so an ``rm`` (exclusive)
        either ran before (ImageError: a layer is missing) or sees the lease.
        """
        self._make_root()
        self._leases.mkdir(exist_ok=True)
        with self._locked(shared=True):
            dirs = self.layer_dirs(image)
            holder.parent.mkdir(parents=True, exist_ok=True)
            _write_json(holder, list(image.layers))
            _write_text(self._lease_pointer(holder), str(holder.absolute()))
            self._used.mkdir(exist_ok=True)
            (self._used / image.id.removeprefix("sha256:")).touch()
        return dirs

    def release(self, holder: Path) -> None:
        """End a lease (a lease whose holder file is gone is ended anyway)."""
        holder.unlink(missing_ok=True)
        self._lease_pointer(holder).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            holder.parent.rmdir()  # the container's directory, if the launch left it empty

    def _lease_pointer(self, holder: Path) -> Path:
        return self._leases / hashlib.sha256(os.fsencode(holder.absolute())).hexdigest()[:40]

    def _leased(self) -> set[str]:
        """Hex digests of the leased layers; drops pointers whose holder is gone (caller holds the lock)."""
        found: set[str] = set()
        for pointer in self._leases.iterdir() if self._leases.is_dir() else []:
            try:
                layers = json.loads(Path(pointer.read_text()).read_text())
            except FileNotFoundError:
                pointer.unlink(missing_ok=True)
                continue
            except (OSError, ValueError):
                continue
            found |= {str(d).removeprefix("sha256:") for d in layers if isinstance(d, str)}
        return found

    def _prepare(self) -> None:
        self._make_root()
        for d in (self._layers, self._images, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for entry in self._tmp.iterdir():
            with contextlib.suppress(OSError):
                if now - entry.lstat().st_mtime > _STALE_TMP_S:
                    shutil.rmtree(entry, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        self._make_root()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _ensure_layer(
        self,
        tar: tarfile.TarFile,
        members: dict[str, tarfile.TarInfo],
        layer: LayerRef,
        index: int,
        source: str,
    ) -> None:
        if self.layer_dir(layer.diff_id).is_dir():
            return
        label = f"{index} ({layer.member})"
        member = members.get(layer.member)
        blob = tar.extractfile(member) if member is not None and member.isfile() else None
        if blob is None:
            raise ImageError(f"{source}: layer {label} is missing from the tarball")
        with blob:
            self.add_layer(blob, layer.diff_id, layer.blob_digest, label, source)

    def add_layer(
        self, blob: ByteStream, diff_id: str, blob_digest: str | None, label: str, source: str
    ) -> None:
        """Unpack the layer ``blob`` (a plain or gzip tar, read once, in order)
        unless the store has it; both digests are checked before it is kept.
        ImageError names ``source`` and the layer ``label`` when it is corrupt."""
        final = self.layer_dir(diff_id)
        if final.is_dir():
            return
        self._prepare()
        tmp = Path(tempfile.mkdtemp(prefix=final.name[:12] + "-", dir=self._tmp))
        try:
            stats = unpack_verified(blob, tmp, diff_id, blob_digest, label, source)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():
                    raise
                # Another importer finished the same layer first: keep theirs.
                shutil.rmtree(tmp, ignore_errors=True)
            log.debug("image.layer_unpacked", layer=diff_id, files=stats.files, whiteouts=stats.whiteouts)
            if stats.devices_skipped:
                log.warning("image.devices_skipped", layer=diff_id, count=stats.devices_skipped)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def layers_in_use(layers_root: Path) -> set[str]:
    """Hex digests of the layers under ``layers_root`` that some mount (in any
    process's mount namespace, e.g. a running container's overlay) refers to."""
    found: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "mountinfo").read_text(errors="surrogateescape")
        except OSError:
            continue
        found |= layers_in_mountinfo(text, layers_root)
    return found


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def layers_in_mountinfo(text: str, layers_root: Path) -> set[str]:
    """The layer digests a mountinfo text refers to; the kernel escapes space, tab,
    newline, backslash (and ',' '=' in overlay options) as ``\\ooo``, decoded first."""
    needle = str(layers_root) + "/"
    found: set[str] = set()
    for line in text.splitlines():
        decoded = _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), line)
        start = decoded.find(needle)
        while start >= 0:
            found.add(decoded[start + len(needle) : start + len(needle) + 64])
            start = decoded.find(needle, start + 1)
    return found


def _write_json(path: Path, data: object) -> None:
    _write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)
