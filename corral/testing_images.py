"""Build small container images for tests and benchmarks, in pure Python.

The image is made from the host's static busybox (Debian's ``busybox-static``,
``/bin/busybox``); nothing comes from a registry. Two layers:

1. busybox with a symlink per applet, ``/etc/passwd``, ``/etc/group``, the
   usual empty directories, ``/etc/doomed`` and ``/opaque/old``;
2. a whiteout of ``/etc/doomed``, an opaque ``/opaque/`` holding only ``new``,
   and ``/etc/layer2``.

So a container on it must not see ``/etc/doomed`` nor ``/opaque/old``.
Written as an OCI image layout (layer 2 gzip-compressed) or as a ``docker save``
archive; the layers are byte-for-byte reproducible, so both formats share them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
DEFAULT_CONFIG: Mapping[str, Any] = {
    "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "IMAGE_VAR=from-image"],
    "Cmd": ["/bin/sh", "-c", "echo hello from the image"],
    "WorkingDir": "",
}


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = MTIME
    return info


def layer_tar(entries: Iterable[tuple[str, bytes | str | None]]) -> bytes:
    """A layer from ``(name, content)``: bytes for a file, ``"->target"`` for a symlink,
    None for a directory (names ending in ``/``)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            if content is None:
                tar.addfile(_info(name.rstrip("/"), tarfile.DIRTYPE, 0o755))
            elif isinstance(content, str):
                info = _info(name, tarfile.SYMTYPE, 0o777)
                info.linkname = content.removeprefix("->")
                tar.addfile(info)
            else:
                mode = 0o755 if name.startswith("bin/") else 0o644
                tar.addfile(_info(name, mode=mode, size=len(content)), io.BytesIO(content))
    return buf.getvalue()


#: Where the test image's /etc/hosts symlink points on the host (nothing may ever write it).
ESCAPE_TARGET = "/tmp/corral-image-escape-target"


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, check=True, text=True).stdout
    return sorted({a for a in out.split() if a and "/" not in a and a != "busybox"})


def busybox_layers(busybox: Path = BUSYBOX) -> list[bytes]:
    """The two layers described in the module docstring."""
    base: list[tuple[str, bytes | str | None]] = [
        (d, None) for d in ("bin/", "etc/", "proc/", "sys/", "dev/", "tmp/", "root/", "mnt/", "opaque/")
    ]
    base.append(("bin/busybox", busybox.read_bytes()))
    base += [(f"bin/{a}", "->busybox") for a in busybox_applets(busybox)]
    base += [
        ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
        ("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
        ("etc/doomed", b"deleted in layer 2\n"),
        # A hostile image: the init writes /etc/hosts before pivot_root, where
        # following this would write a host file (see rootfs._write_etc_file).
        ("etc/hosts", "->" + ESCAPE_TARGET),
        ("opaque/old", b"hidden by an opaque directory in layer 2\n"),
    ]
    top: list[tuple[str, bytes | str | None]] = [
        ("etc/.wh.doomed", b""),
        ("opaque/", None),
        ("opaque/.wh..wh..opq", b""),
        ("opaque/new", b"from layer 2\n"),
        ("etc/layer2", b"layer 2 was here\n"),
    ]
    return [layer_tar(base), layer_tar(top)]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_config(layers: list[bytes], config: Mapping[str, Any] | None = None) -> bytes:
    body = {
        "architecture": "amd64",
        "os": "linux",
        "config": dict(DEFAULT_CONFIG if config is None else config),
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + _sha(layer) for layer in layers]},
    }
    return json.dumps(body, sort_keys=True).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, size=len(data)), io.BytesIO(data))


def write_oci(
    path: Path,
    layers: list[bytes],
    name: str | None = "busybox:test",
    config: Mapping[str, Any] | None = None,
    gzip_from: int = 1,
    corrupt_layer: int | None = None,
) -> Path:
    """An OCI image-layout tarball; layers from index ``gzip_from`` on are gzip-compressed.

    ``corrupt_layer``: that layer's blob gets 512 bytes more than its digest covers.
    """
    config_blob = image_config(layers, config)
    blobs = {_sha(config_blob): config_blob}
    descriptors = []
    for i, layer in enumerate(layers):
        compressed = i >= gzip_from
        blob = gzip.compress(layer, mtime=0) if compressed else layer
        blobs[_sha(blob)] = blob + b"\0" * 512 if i == corrupt_layer else blob
        media = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compressed else "")
        descriptors.append({"mediaType": media, "digest": "sha256:" + _sha(blob), "size": len(blob)})
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + _sha(config_blob),
                "size": len(config_blob),
            },
            "layers": descriptors,
        }
    ).encode()
    blobs[_sha(manifest)] = manifest
    entry: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:" + _sha(manifest),
        "size": len(manifest),
    }
    if name:
        entry["annotations"] = {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}
    index = json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()
    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(tar, "index.json", index)
        for hexd, blob in blobs.items():
            _add(tar, f"blobs/sha256/{hexd}", blob)
    return path


def write_docker(
    path: Path,
    layers: list[bytes],
    name: str | None = "busybox:test",
    config: Mapping[str, Any] | None = None,
    corrupt_layer: int | None = None,
) -> Path:
    """A ``docker save`` (legacy layout) tarball; ``corrupt_layer`` as for :func:`write_oci`."""
    config_blob = image_config(layers, config)
    config_name = _sha(config_blob) + ".json"
    layer_names = [f"{_sha(layer)}/layer.tar" for layer in layers]
    manifest = [{"Config": config_name, "RepoTags": [name] if name else [], "Layers": layer_names}]
    with tarfile.open(path, "w") as tar:
        _add(tar, config_name, config_blob)
        for i, (layer_name, layer) in enumerate(zip(layer_names, layers, strict=True)):
            _add(tar, layer_name, layer + b"\0" * 512 if i == corrupt_layer else layer)
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def build_busybox_image(path: Path, fmt: str = "oci", name: str | None = "busybox:test") -> Path:
    """Write the busybox test image to ``path`` as ``fmt`` ("oci" or "docker")."""
    layers = busybox_layers()
    if fmt == "oci":
        return write_oci(path, layers, name)
    if fmt == "docker":
        return write_docker(path, layers, name)
    raise ValueError(f"fmt: must be 'oci' or 'docker', got {fmt!r}")
