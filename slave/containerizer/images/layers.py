"""Unpacking one layer blob with both of its digests checked.

A layer arrives as a stream read once, in order (a tarball member or a
registry's HTTP body): its bytes are hashed as they pass (the blob digest of
an OCI manifest), and, when gzip, once more after decompression (the
config's ``diff_id``, the store's key).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path
from typing import Any, Protocol

from corral.slave.containerizer.images.errors import ImageError
from corral.slave.containerizer.images.unpack import UnpackStats, unpack_layer

_CHUNK = 1 << 20


class ByteStream(Protocol):
    """What a layer is read from: a file, a tarball member, an HTTP body."""

    def read(self, size: int = -1, /) -> bytes | None: ...


class _HashingReader(io.RawIOBase):
    """Passes reads through and hashes every byte."""

    def __init__(self, raw: ByteStream) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer)) or b""
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        return n

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


class _Prefixed(io.RawIOBase):
    """``prefix``, then the rest of ``raw``: bytes already read, put back."""

    def __init__(self, prefix: bytes, raw: ByteStream) -> None:
        self._prefix = prefix
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._raw.read(len(buffer))
        n = len(data or b"")
        buffer[:n] = data or b""
        return n


def unpack_verified(
    blob: ByteStream, dest: Path, diff_id: str, blob_digest: str | None, label: str, source: str
) -> UnpackStats:
    """Unpack the plain or gzip tar ``blob`` into the empty directory ``dest``;
    ImageError naming ``source`` and the layer ``label`` if it is corrupt, cut
    short or has other digests than ``blob_digest`` (None: not checked) and
    ``diff_id``. The caller removes ``dest`` on error."""
    os.chmod(dest, 0o755)
    # The first two bytes say whether it is gzip and are put back in front.
    raw = _HashingReader(blob)
    magic = raw.read(2) or b""
    if len(magic) == 1:
        magic += raw.read(1) or b""
    head = _Prefixed(magic, raw)
    plain = _HashingReader(gzip.GzipFile(fileobj=head, mode="rb")) if magic == b"\x1f\x8b" else None
    try:
        stats = unpack_layer(plain or head, dest, label)  # type: ignore[arg-type]
        if plain is not None:
            plain.drain()
        raw.drain()
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise ImageError(f"{source}: layer {label} is corrupt or cut short: {e}") from None
    except ImageError as e:
        # A TransferError stays one (worth a retry); its message may name the source already.
        raise type(e)(str(e) if str(e).startswith(source) else f"{source}: {e}") from None
    uncompressed = (plain or raw).digest
    for expected, actual in ((blob_digest, raw.digest), (diff_id, uncompressed)):
        if expected is not None and expected != actual:
            raise ImageError(f"{source}: layer {label} digest mismatch: expected {expected}, got {actual}")
    return stats
