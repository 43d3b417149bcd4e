"""TLS files a client has checked before, remembered so that the next
short-lived command need not check them again.

:func:`corral.pki.load_credentials` checks a CA file, a certificate and its
key for everything a TLS handshake would refuse with a one-word alert, and
names the file and the problem. That needs ``cryptography``, whose import
alone is a good part of a ``corral run`` (tens of milliseconds). Its verdict
depends only on the three files' bytes and on the clock, so a command that
passed the check records, under a digest of the bytes, the window of time in
which they are valid; the next command that reads the same bytes within that
window builds its credentials from them without importing ``cryptography``.

What is remembered only spares the client its own diagnosis: the handshake
still verifies both sides, so a stale or forged record cannot let through
anything the peer would refuse (at worst, a problem is then reported as a
failed handshake instead of by name). Anything unexpected (no record, other
bytes, outside the window, an unreadable or corrupt store) falls back to the
full check.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from corral.transport import Credentials

log = structlog.get_logger(__name__)

STORE_VERSION = 1
#: records kept (most recent first): one per set of files a user calls with
MAX_RECORDS = 16


def warn_if_key_readable(path: Path) -> None:
    """Log (not refuse) a private key that others may read, as ssh warns."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("tls.key_readable_by_others", key=str(path), mode=oct(stat.S_IMODE(mode)))


def _digest(paths: Sequence[Path], blobs: Sequence[bytes]) -> str:
    h = hashlib.sha256()
    for path, blob in zip(paths, blobs, strict=True):
        for part in (str(path).encode(), blob):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
    return h.hexdigest()


def _records(store: Path) -> dict[str, dict[str, float]]:
    try:
        data = json.loads(store.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != STORE_VERSION:
        return {}
    records = data.get("records")
    return records if isinstance(records, dict) else {}


def remembered(files: tuple[str, str, str], store: Path, now: float | None = None) -> Credentials | None:
    """The credentials of ``files`` (CA, certificate, key) if the same bytes
    passed the full check before and ``now`` (default: the clock) lies in
    their window; None otherwise (then check them with corral.pki)."""
    paths = [Path(f) for f in files]
    try:
        blobs = [p.read_bytes() for p in paths]
    except OSError:
        return None
    record = _records(store).get(_digest(paths, blobs))
    t = time.time() if now is None else now
    try:
        if record is None or not record["not_before"] <= t <= record["not_after"]:
            return None
    except (KeyError, TypeError):
        return None
    warn_if_key_readable(paths[2])
    ca, cert, key = blobs
    return Credentials(root_certificates=ca, certificate_chain=cert, private_key=key, files=files)


def remember(credentials: Credentials, store: Path, not_before: float, not_after: float) -> None:
    """Record that ``credentials`` (from corral.pki.load_credentials) passed
    the check and are valid from ``not_before`` to ``not_after`` (unix
    times). Best effort: a store that cannot be written is left alone."""
    if credentials.files is None:
        return
    paths = [Path(f) for f in credentials.files]
    try:
        blobs = [p.read_bytes() for p in paths]
    except OSError:
        return
    # Only when the credentials are the files' own bytes (a CA file with text
    # around its PEM blocks is normalised by the check): then the bytes read
    # next time are exactly what the full check would have returned.
    if (blobs[0], blobs[1], blobs[2]) != (
        credentials.root_certificates,
        credentials.certificate_chain,
        credentials.private_key,
    ):
        return
    records = {_digest(paths, blobs): {"not_before": not_before, "not_after": not_after}}
    for digest, record in _records(store).items():
        if len(records) >= MAX_RECORDS:
            break
        records.setdefault(digest, record)
    tmp = store.with_name(f".{store.name}.{os.getpid()}.tmp")
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"version": STORE_VERSION, "records": records}))
        tmp.replace(store)  # atomic: a concurrent command reads the old or the new store
    except OSError:
        tmp.unlink(missing_ok=True)
