"""Read an image tarball's manifest: OCI image layout or ``docker save``.

Either way the result is an :class:`ImageManifest`: the image id (digest of its
config), its layers bottom first, each with the digest its bytes must have, the
parts of the config a container needs, and the names the tarball gives it.

* OCI image layout (image-spec ``image-layout.md``): ``oci-layout``,
  ``index.json`` → a manifest blob → a config blob and layer blobs, all under
  ``blobs/sha256/<hex>``, each named by the sha256 of its bytes. Layers may be
  gzip-compressed; the config's ``rootfs.diff_ids`` give the digest of each
  uncompressed tar.
* ``docker save``: ``manifest.json`` lists ``Config`` (``<hex>.json``, named by
  its sha256), ``RepoTags`` and ``Layers`` (``<id>/layer.tar``), whose digests
  are the config's ``diff_ids``.

Every blob read here is checked against its digest; layer bytes are checked
while they are unpacked (store.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass
from typing import Any

from corral.image_refs import DIGEST_RE
from corral.slave.containerizer.images.errors import ImageError

_JSON_MAX = 16 << 20
_REF_NAME = "org.opencontainers.image.ref.name"
_CONTAINERD_NAME = "io.containerd.image.name"
_INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
_LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar": "none",
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "none",
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
}


@dataclass(frozen=True)
class ImageConfig:
    """What the image asks of a container (the OCI config's ``config`` object)."""

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "Env": list(self.env),
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.cmd),
            "WorkingDir": self.working_dir,
            "User": self.user,
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> ImageConfig:
        """Parse a config's ``config`` object (null is an empty one); raises ImageError naming ``where``."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ImageError(f"{where}: must be an object")

        def strings(key: str) -> tuple[str, ...]:
            value = data.get(key)
            if value is None:
                return ()
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ImageError(f"{where}.{key}: must be a list of strings")
            return tuple(value)

        def string(key: str) -> str:
            value = data.get(key) or ""
            if not isinstance(value, str):
                raise ImageError(f"{where}.{key}: must be a string")
            return value

        env = strings("Env")
        bad = [e for e in env if "=" not in e or e.startswith("=") or "\0" in e]
        if bad:
            raise ImageError(f"{where}.Env: entries must be NAME=VALUE, got {bad[0]!r}")
        return cls(
            env=env,
            entrypoint=strings("Entrypoint"),
            cmd=strings("Cmd"),
            working_dir=string("WorkingDir"),
            user=string("User"),
        )


@dataclass(frozen=True)
class LayerRef:
    """One layer of an image, as found in its tarball."""

    member: str  # path of the blob in the tarball
    diff_id: str  # sha256:<hex> of the uncompressed tar: the store's key
    blob_digest: str | None  # sha256:<hex> of the blob as stored (OCI), None when it is the tar itself


@dataclass(frozen=True)
class ImageManifest:
    image_id: str  # sha256:<hex> of the config blob
    layers: tuple[LayerRef, ...]  # bottom first
    config: ImageConfig
    names: tuple[str, ...]  # name:tag references the tarball carries
    format: str  # "oci" | "docker"


#: manifest media types that list other manifests (one per platform)
INDEX_TYPES = _INDEX_TYPES


def layer_media_type_supported(media_type: str) -> bool:
    """Uncompressed and gzip tar layers (OCI and Docker names); not zstd."""
    return media_type in _LAYER_TYPES


def parse_config(data: bytes, source: str) -> tuple[list[str], ImageConfig]:
    """An image config blob's layer digests (``rootfs.diff_ids``, bottom
    first) and what a container needs from it (a registry pull reads it so)."""
    config = _json(data, source, "the image config")
    return _diff_ids(config, source), _config(config, source)


def parse_json(data: bytes, source: str, what: str) -> Any:
    """``data`` as JSON, at most 16 MiB; ImageError naming ``what`` otherwise."""
    if len(data) > _JSON_MAX:
        raise ImageError(f"{source}: {what} is larger than {_JSON_MAX >> 20} MiB")
    return _json(data, source, what)


def read_manifest(tar: tarfile.TarFile, source: str, want: str | None = None) -> ImageManifest:
    """The manifest of the image in ``tar`` (opened for random access).

    ``want``: a name:tag to pick when the tarball holds several images.
    """
    members = {normal_member(m.name): m for m in tar.getmembers()}
    if "index.json" in members and "oci-layout" in members:
        return _read_oci(tar, members, source, want)
    if "manifest.json" in members:
        return _read_docker(tar, members, source, want)
    raise ImageError(
        f"{source}: not an image tarball (neither an OCI image layout with index.json and "
        "oci-layout nor a docker save archive with manifest.json)"
    )


def normal_member(name: str) -> str:
    """A tar member's name without ``./`` and empty components."""
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def _read(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, source: str, what: str
) -> bytes:
    member = members.get(normal_member(name))
    if member is None or not member.isfile():
        raise ImageError(f"{source}: {what} {name!r} is missing from the tarball")
    if member.size > _JSON_MAX:
        raise ImageError(f"{source}: {what} {name!r} is too large ({member.size} bytes)")
    f = tar.extractfile(member)
    if f is None:
        raise ImageError(f"{source}: cannot read {what} {name!r}")
    with f:
        return f.read()


def _json(data: bytes, source: str, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"{source}: {what} is not valid JSON: {e}") from None


def _digest(value: object, source: str, what: str) -> str:
    if not isinstance(value, str) or not DIGEST_RE.fullmatch(value):
        raise ImageError(f"{source}: {what} must be a sha256:<64 hex> digest, got {value!r}")
    return value


def _blob(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], digest: str, source: str, what: str
) -> bytes:
    data = _read(tar, members, "blobs/sha256/" + digest.removeprefix("sha256:"), source, what)
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ImageError(f"{source}: {what} digest mismatch: expected {digest}, got {actual}")
    return data


def _diff_ids(config: Any, source: str) -> list[str]:
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list):
        raise ImageError(f"{source}: the image config has no rootfs.diff_ids list")
    return [_digest(d, source, f"config rootfs.diff_ids[{i}]") for i, d in enumerate(ids)]


def _config(config: Any, source: str) -> ImageConfig:
    if not isinstance(config, dict):
        raise ImageError(f"{source}: the image config must be a JSON object")
    return ImageConfig.from_json(config.get("config"), f"{source}: config.config")


def _name_of(annotations: object) -> str | None:
    if not isinstance(annotations, dict):
        return None
    for key in (_CONTAINERD_NAME, _REF_NAME):
        value = annotations.get(key)
        # A bare ref.name ("latest") is a tag without a repository: not a name.
        if isinstance(value, str) and ":" in value:
            return value
    return None


def _read_oci(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], source: str, want: str | None
) -> ImageManifest:
    index = _json(_read(tar, members, "index.json", source, "index"), source, "index.json")
    descriptor = _pick_manifest(tar, members, index, source, want, depth=0)
    manifest_digest = _digest(descriptor.get("digest"), source, "index.json manifest digest")
    manifest = _json(_blob(tar, members, manifest_digest, source, "manifest"), source, "the manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        raise ImageError(f"{source}: manifest {manifest_digest} has no config descriptor")
    config_digest = _digest(manifest["config"].get("digest"), source, "manifest config digest")
    config = _json(_blob(tar, members, config_digest, source, "config"), source, "the image config")
    diff_ids = _diff_ids(config, source)
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != len(diff_ids):
        raise ImageError(
            f"{source}: the manifest lists {len(layers) if isinstance(layers, list) else 'no'} layers "
            f"but the config has {len(diff_ids)} diff_ids"
        )
    refs = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ImageError(f"{source}: manifest layers[{i}] must be an object")
        media_type = layer.get("mediaType", "application/vnd.oci.image.layer.v1.tar")
        if media_type not in _LAYER_TYPES:
            raise ImageError(
                f"{source}: layers[{i}] has media type {media_type!r}; supported: uncompressed or gzip tar"
            )
        digest = _digest(layer.get("digest"), source, f"manifest layers[{i}].digest")
        refs.append(LayerRef("blobs/sha256/" + digest.removeprefix("sha256:"), diff_ids[i], digest))
    name = _name_of(descriptor.get("annotations"))
    return ImageManifest(config_digest, tuple(refs), _config(config, source), (name,) if name else (), "oci")


def _pick_manifest(
    tar: tarfile.TarFile,
    members: dict[str, tarfile.TarInfo],
    index: Any,
    source: str,
    want: str | None,
    depth: int,
) -> dict[str, Any]:
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list) or not manifests or not all(isinstance(m, dict) for m in manifests):
        raise ImageError(f"{source}: index.json lists no manifests")
    chosen: dict[str, Any] = manifests[0]
    if want is not None:
        tag = want.rsplit(":", 1)[-1]
        for m in manifests:
            annotations = m.get("annotations") or {}
            if isinstance(annotations, dict) and want in (
                annotations.get(_CONTAINERD_NAME),
                annotations.get(_REF_NAME),
            ):
                chosen = m
                break
            if isinstance(annotations, dict) and annotations.get(_REF_NAME) == tag:
                chosen = m
    if chosen.get("mediaType") in _INDEX_TYPES:
        if depth > 2:
            raise ImageError(f"{source}: image indexes nested too deep")
        digest = _digest(chosen.get("digest"), source, "nested index digest")
        nested = _json(_blob(tar, members, digest, source, "image index"), source, "a nested index")
        for m in nested.get("manifests", []) if isinstance(nested, dict) else []:
            platform = m.get("platform") if isinstance(m, dict) else None
            if (
                isinstance(platform, dict)
                and platform.get("os") == "linux"
                and platform.get("architecture") == "amd64"
            ):
                return m  # type: ignore[no-any-return]
        return _pick_manifest(tar, members, nested, source, None, depth + 1)
    return chosen


def _read_docker(
    tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], source: str, want: str | None
) -> ImageManifest:
    entries = _json(_read(tar, members, "manifest.json", source, "manifest"), source, "manifest.json")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ImageError(f"{source}: manifest.json must be a non-empty list of objects")
    entry: dict[str, Any] = entries[0]
    if want is not None:
        for e in entries:
            if want in (e.get("RepoTags") or []):
                entry = e
                break
    config_name = entry.get("Config")
    if not isinstance(config_name, str):
        raise ImageError(f"{source}: manifest.json entry has no Config")
    config_bytes = _read(tar, members, config_name, source, "config")
    config_id = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    stem = normal_member(config_name).rsplit("/", 1)[-1].removesuffix(".json")
    if re.fullmatch(r"[0-9a-f]{64}", stem) and "sha256:" + stem != config_id:
        raise ImageError(f"{source}: config digest mismatch: expected sha256:{stem}, got {config_id}")
    config = _json(config_bytes, source, config_name)
    diff_ids = _diff_ids(config, source)
    layers = entry.get("Layers")
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise ImageError(f"{source}: manifest.json Layers must be a list of paths")
    if len(layers) != len(diff_ids):
        raise ImageError(
            f"{source}: manifest.json lists {len(layers)} layers but the config has {len(diff_ids)} diff_ids"
        )
    tags = entry.get("RepoTags") or []
    names = tuple(t for t in tags if isinstance(t, str) and t)
    refs = tuple(LayerRef(normal_member(m), d, None) for m, d in zip(layers, diff_ids, strict=True))
    return ImageManifest(config_id, refs, _config(config, source), names, "docker")
