"""A client of the OCI distribution API (the Docker Registry HTTP API v2).

What an agent needs to pull an image: the manifest of a tag or a digest
(OCI or Docker schema 2, or an index of them from which the host's platform
is picked), the config blob, and each layer blob as a stream. Every manifest
fetched by digest and every blob is checked against its digest (layers while
they are unpacked: store.py). Authentication as registries do it: a 401 with
``WWW-Authenticate: Bearer realm=…,service=…,scope=…`` is answered with a
token from that realm (asked with the registry's credentials when there are
some, anonymously otherwise), ``Basic`` with the credentials. HTTP is httpx;
a request that fails to connect, or is answered 429 or 5xx, is tried again
(``retries`` times, backing off); a blob cut short is fetched again whole.

A reference names its registry: ``HOST[:PORT]/REPO[:TAG|@sha256:…]``, where
HOST has a dot or a port or is ``localhost`` (as Docker tells registries
from repository paths). There is no default registry: a bare ``NAME:TAG`` is
a name in the agent's own store, as before.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import platform
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

from corral.image_refs import DIGEST_RE, RemoteRef
from corral.slave.containerizer.images.errors import ImageError
from corral.slave.containerizer.images.formats import INDEX_TYPES, layer_media_type_supported, parse_json
from corral.slave.containerizer.images.registry_config import RegistryConfig

log = structlog.get_logger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, *INDEX_TYPES))
_MANIFEST_MAX = 4 << 20
_CHUNK = 1 << 16
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_platform() -> tuple[str, str]:
    """(os, architecture) in the OCI image-spec's names (Go's), e.g. ("linux", "amd64")."""
    machine = platform.machine()
    return "linux", _GOARCH.get(machine, machine)


class TransferError(ImageError):
    """A blob's transfer failed or was cut short: worth fetching it again."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """An image manifest for one platform: its config and layers, bottom first."""

    digest: str  # of the manifest bytes (for an index: of the chosen entry)
    config: Descriptor
    layers: tuple[Descriptor, ...]


def _descriptor(value: object, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ImageError(f"{where}: a descriptor must be an object")
    digest, size = value.get("digest"), value.get("size", 0)
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ImageError(f"{where}: digest must be sha256:<64 hex>, got {digest!r}")
    if not isinstance(size, int) or size < 0:
        raise ImageError(f"{where}: size must be a non-negative integer")
    return Descriptor(str(value.get("mediaType", "")), digest, size)


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…"`` → ("bearer", {realm, service})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistryClient:
    """Pulls manifests and blobs; one per agent (tokens are kept per repository).

    ``transport`` is for tests that cannot run a registry (a fault it must
    answer); the tests run against Debian's ``docker-registry``.
    """

    def __init__(
        self, config: RegistryConfig | None = None, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config = config or RegistryConfig()
        self._http = httpx.Client(
            timeout=httpx.Timeout(self.config.timeout_s, connect=min(10.0, self.config.timeout_s)),
            transport=transport,
            follow_redirects=True,  # blobs are often served from a redirect to storage
        )
        self._tokens: dict[tuple[str, str], str] = {}

    def close(self) -> None:
        self._http.close()

    # -- what a pull asks --------------------------------------------------------

    def manifest(self, ref: RemoteRef) -> Manifest:
        """The manifest ``ref`` names, for this host's platform when it is an index."""
        media_type, body, digest = self._get_manifest(ref, ref.reference)
        if ref.digest is not None and digest != ref.digest:
            raise ImageError(f"{ref}: the registry sent a manifest whose digest is {digest}")
        if media_type in INDEX_TYPES or self._is_index(body):
            entry = self._pick_platform(ref, body)
            media_type, body, digest = self._get_manifest(ref, entry.digest)
            if digest != entry.digest:
                raise ImageError(
                    f"{ref}: the registry sent a manifest whose digest is {digest}, not {entry.digest}"
                )
        return self._parse_manifest(ref, media_type, body, digest)

    def blob_bytes(self, ref: RemoteRef, desc: Descriptor, limit: int = 16 << 20) -> bytes:
        """A small blob (the config), checked against its digest."""
        with self.blob(ref, desc) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise ImageError(f"{ref}: blob {desc.digest} is larger than {limit >> 20} MiB")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != desc.digest:
            raise ImageError(f"{ref}: blob {desc.digest} digest mismatch: got {actual}")
        return data

    @contextlib.contextmanager
    def blob(self, ref: RemoteRef, desc: Descriptor) -> Iterator[_BodyReader]:
        """A blob's bytes as a stream; the caller checks the digest (store.py does while unpacking)."""
        url = self._url(ref, f"blobs/{desc.digest}")
        with self._stream(ref, url, {}) as response:
            yield _BodyReader(response, f"{ref}: blob {desc.digest}")

    # -- HTTP ------------------------------------------------------------------

    def _url(self, ref: RemoteRef, path: str) -> str:
        return f"{self.config.scheme(ref.registry)}://{ref.registry}/v2/{ref.repository}/{path}"

    def _get_manifest(self, ref: RemoteRef, reference: str) -> tuple[str, bytes, str]:
        url = self._url(ref, f"manifests/{reference}")
        with self._stream(ref, url, {"Accept": _ACCEPT}) as response:
            body = _BodyReader(response, f"{ref}: manifest").read(_MANIFEST_MAX + 1)
        if len(body) > _MANIFEST_MAX:
            raise ImageError(f"{ref}: the manifest is larger than {_MANIFEST_MAX >> 20} MiB")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return media_type, body, "sha256:" + hashlib.sha256(body).hexdigest()

    @contextlib.contextmanager
    def _stream(self, ref: RemoteRef, url: str, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """GET ``url`` (authenticating, retrying); yields a 200 response streaming its body."""
        delay = self.config.backoff_s
        for attempt in range(self.config.retries + 1):
            last = attempt == self.config.retries
            try:
                with self._http.stream("GET", url, headers={**headers, **self._auth(ref)}) as response:
                    if response.status_code == 401 and self._authenticate(ref, response):
                        response.close()
                        with self._http.stream("GET", url, headers={**headers, **self._auth(ref)}) as again:
                            self._check(ref, again, url)
                            yield again
                            return
                    if (response.status_code == 429 or response.status_code >= 500) and not last:
                        log.warning(
                            "registry.retry", url=url, status=response.status_code, attempt=attempt + 1
                        )
                    else:
                        self._check(ref, response, url)
                        yield response
                        return
            except httpx.TransportError as e:
                if last:
                    raise ImageError(
                        f"registry {ref.registry} unreachable ({url}): {e or type(e).__name__}"
                    ) from None
                log.warning("registry.retry", url=url, error=repr(e), attempt=attempt + 1)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _check(self, ref: RemoteRef, response: httpx.Response, url: str) -> None:
        status = response.status_code
        if status == 200:
            return
        response.read()
        codes = _error_codes(response)
        if status == 401:
            who = "with the credentials given" if ref.registry in self.config.credentials else "anonymously"
            raise ImageError(
                f"registry {ref.registry}: unauthorized to pull {ref.repository} {who}"
                + (
                    ""
                    if ref.registry in self.config.credentials
                    else " (give credentials in --registry-config)"
                )
            )
        if status == 403:
            raise ImageError(f"registry {ref.registry}: pulling {ref.repository} is forbidden")
        if status == 404:
            what = "manifest" if "/manifests/" in url else "blob"
            raise ImageError(
                f"registry {ref.registry}: {ref} not found ({', '.join(codes) or what + ' unknown'})"
            )
        raise ImageError(f"registry {ref.registry}: GET {url} answered {status} {', '.join(codes)}".rstrip())

    def _auth(self, ref: RemoteRef) -> dict[str, str]:
        token = self._tokens.get((ref.registry, ref.repository))
        if token is None:
            return {}
        return {"Authorization": token}

    def _authenticate(self, ref: RemoteRef, response: httpx.Response) -> bool:
        """Answer a 401's challenge; False when there is nothing more to try."""
        key = (ref.registry, ref.repository)
        scheme, params = _challenge(response.headers.get("www-authenticate", ""))
        creds = self.config.credentials.get(ref.registry)
        if scheme == "basic":
            if creds is None or key in self._tokens:
                return False
            pair = f"{creds.username}:{creds.password}".encode()
            self._tokens[key] = "Basic " + base64.b64encode(pair).decode()
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{ref.repository}:pull")
        auth = None if creds is None else (creds.username, creds.password)
        try:
            answer = self._http.get(params["realm"], params=query, auth=auth)
        except httpx.TransportError as e:
            raise ImageError(
                f"registry {ref.registry}: its token service {params['realm']} is unreachable: {e}"
            ) from None
        if answer.status_code in (401, 403):
            raise ImageError(
                f"registry {ref.registry}: its token service refused "
                + (
                    "the credentials given"
                    if creds
                    else "an anonymous pull (give credentials in --registry-config)"
                )
            )
        try:
            data = answer.json()
            token = data.get("token") or data.get("access_token")
        except ValueError:
            token = None
        if answer.status_code != 200 or not isinstance(token, str) or not token:
            raise ImageError(
                f"registry {ref.registry}: its token service answered {answer.status_code} without a token"
            )
        already = self._tokens.get(key) == f"Bearer {token}"
        self._tokens[key] = f"Bearer {token}"
        return not already

    # -- manifests ---------------------------------------------------------------

    @staticmethod
    def _is_index(body: bytes) -> bool:
        return b'"manifests"' in body and b'"layers"' not in body

    def _pick_platform(self, ref: RemoteRef, body: bytes) -> Descriptor:
        index = parse_json(body, str(ref), "the image index")
        entries = index.get("manifests") if isinstance(index, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ImageError(f"{ref}: the image index lists no manifests")
        want_os, want_arch = host_platform()
        seen = []
        for i, entry in enumerate(entries):
            plat = entry.get("platform") if isinstance(entry, dict) else None
            if not isinstance(plat, dict):
                continue
            seen.append(f"{plat.get('os')}/{plat.get('architecture')}")
            if plat.get("os") == want_os and plat.get("architecture") == want_arch:
                return _descriptor(entry, f"{ref}: index manifests[{i}]")
        raise ImageError(
            f"{ref}: no {want_os}/{want_arch} image in its index (it has {', '.join(seen) or 'none'})"
        )

    def _parse_manifest(self, ref: RemoteRef, media_type: str, body: bytes, digest: str) -> Manifest:
        where = f"{ref}: manifest"
        data = parse_json(body, str(ref), "the manifest")
        if not isinstance(data, dict):
            raise ImageError(f"{where} must be a JSON object")
        kind = media_type or str(data.get("mediaType", ""))
        if data.get("schemaVersion") == 1 or "signatures" in data:
            raise ImageError(f"{where}: Docker schema 1 manifests are not supported (push the image again)")
        if kind not in (OCI_MANIFEST, DOCKER_MANIFEST, "application/json", ""):
            raise ImageError(f"{where}: unsupported media type {kind!r}")
        layers = data.get("layers")
        if not isinstance(layers, list):
            raise ImageError(f"{where} has no layers list")
        descs = tuple(_descriptor(layer, f"{where} layers[{i}]") for i, layer in enumerate(layers))
        for i, d in enumerate(descs):
            if not layer_media_type_supported(d.media_type):
                raise ImageError(
                    f"{where} layers[{i}] has media type {d.media_type!r}; supported: tar or gzip tar"
                )
        return Manifest(digest, _descriptor(data.get("config"), f"{where} config"), descs)


def _error_codes(response: httpx.Response) -> list[str]:
    try:
        errors = response.json().get("errors", [])
    except (ValueError, AttributeError):
        return []
    return [str(e.get("code")) for e in errors if isinstance(e, dict) and e.get("code")]


class _BodyReader:
    """A streamed HTTP body as a file's ``read``; a transfer cut short is an ImageError."""

    def __init__(self, response: httpx.Response, what: str) -> None:
        self._chunks = response.iter_bytes(_CHUNK)
        self._buffer = b""
        self._what = what
        self._expected = int(response.headers.get("content-length", "-1") or -1)
        self._seen = 0

    def read(self, n: int = -1) -> bytes:
        try:
            while n < 0 or len(self._buffer) < n:
                chunk = next(self._chunks, None)
                if chunk is None:
                    if 0 <= self._expected != self._seen:
                        raise TransferError(
                            f"{self._what}: cut short after {self._seen} of {self._expected} bytes"
                        )
                    break
                self._seen += len(chunk)
                self._buffer += chunk
        except httpx.HTTPError as e:
            raise TransferError(f"{self._what}: the transfer failed: {e or type(e).__name__}") from None
        if n < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


def describe(manifest: Manifest) -> dict[str, Any]:
    """For logs: the manifest's digest and sizes."""
    return {
        "manifest": manifest.digest,
        "layers": len(manifest.layers),
        "bytes": sum(d.size for d in manifest.layers),
    }
