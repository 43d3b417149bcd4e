"""The one place gRPC servers and channels are made.

Credentials enter here (DESIGN.md, "Security"): mutual TLS is a configuration
change, not a hunt through the code. With TLS a server requires a client
certificate signed by its CA, and the certificate's common name is the
caller's principal (corral/identity.py). Without TLS a client may *claim* a
principal, sent as ``corral-principal`` metadata on every call; the server
marks such a principal unauthenticated.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
import grpc.aio

#: Keepalives make a dead peer visible within seconds instead of TCP's hours.
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
_SERVER_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


T = TypeVar("T")


async def drain(queue: asyncio.Queue[T | None]) -> AsyncIterator[T]:
    """The request side of a client stream: what is put on ``queue``, until None."""
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item


#: The name every gRPC client checks a master's certificate against, whatever
#: address it dialled (gRPC's ``ssl_target_name_override``). Every gRPC channel
#: corral makes dials a master, and only master certificates carry this name
#: (corral.pki adds it to every ``master:*`` certificate): a framework's
#: certificate also serves (its HTTP API, for localhost), and without this a
#: tenant could stand up a "master" with it that agents and operators would
#: trust. Certificates from another PKI must carry it as a DNS name too.
MASTER_TLS_NAME = "master.corral"

#: environment variables every corral client and daemon reads its TLS files from
ENV_CA, ENV_CERT, ENV_KEY = "CORRAL_TLS_CA", "CORRAL_TLS_CERT", "CORRAL_TLS_KEY"
#: metadata key of a claimed principal (the same as corral.identity.PRINCIPAL_METADATA_KEY;
#: identity imports grpc.aio for its types, transport stays below it)
_CLAIM_KEY = "corral-principal"


@dataclass(frozen=True)
class Credentials:
    """TLS material (PEM bytes); no certificate means plaintext (loopback and tests).

    ``files`` are the (CA, certificate, key) paths the material came from
    (corral.pki.load_credentials sets them): the stdlib ``ssl`` module, used
    by the frameworks' HTTP APIs, loads a key pair from files only.
    ``claim`` is the principal (``KIND:NAME``) a plaintext client claims; a
    TLS client sends none, its certificate decides.
    """

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None
    files: tuple[str, str, str] | None = None
    claim: str = ""

    @property
    def secure(self) -> bool:
        return self.certificate_chain is not None

    def claiming(self, principal: str) -> Credentials:
        """The same credentials, claiming ``principal`` when plaintext."""
        return replace(self, claim=principal)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata: the claimed principal, on plaintext channels only."""
        return ((_CLAIM_KEY, self.claim),) if self.claim and not self.secure else ()


def env_tls_files() -> tuple[str, str, str] | None:
    """``$CORRAL_TLS_CA``/``CERT``/``KEY`` if all three are set; ValueError naming
    what is missing if only some are."""
    values = {name: os.environ.get(name, "") for name in (ENV_CA, ENV_CERT, ENV_KEY)}
    given = [n for n, v in values.items() if v]
    if not given:
        return None
    if len(given) != len(values):
        missing = ", ".join(n for n, v in values.items() if not v)
        raise ValueError(f"TLS needs all of {ENV_CA}, {ENV_CERT} and {ENV_KEY}; {missing} not set")
    return values[ENV_CA], values[ENV_CERT], values[ENV_KEY]


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or a bare host) names this machine's loopback only.
    The wildcard (``0.0.0.0``, ``[::]``) is not loopback: it listens everywhere."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else address
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(
    credentials: Credentials | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
) -> grpc.aio.Server:
    return grpc.aio.server(options=_SERVER_OPTIONS, interceptors=list(interceptors))


def bind(server: grpc.aio.Server, address: str, credentials: Credentials | None = None) -> int:
    """Bind ``host:port`` (port 0 picks a free one); returns the port."""
    creds = credentials or Credentials()
    if creds.secure:
        assert creds.private_key is not None
        assert creds.certificate_chain is not None
        server_creds = grpc.ssl_server_credentials(
            [(creds.private_key, creds.certificate_chain)],
            root_certificates=creds.root_certificates,
            require_client_auth=creds.root_certificates is not None,
        )
        return server.add_secure_port(address, server_creds)
    return server.add_insecure_port(address)


# The stubs make the interceptor bases generic; at run time they are not.
if TYPE_CHECKING:
    _AsyncInterceptor = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _SyncInterceptor = grpc.UnaryUnaryClientInterceptor[Any, Any]
else:
    _AsyncInterceptor = grpc.aio.UnaryUnaryClientInterceptor
    _SyncInterceptor = grpc.UnaryUnaryClientInterceptor


def _with_claim(details: Any, metadata: tuple[tuple[str, str], ...]) -> Any:
    """``details`` with the claim added to its metadata (ClientCallDetails is a namedtuple)."""
    return details._replace(metadata=(*(details.metadata or ()), *metadata))


class _AsyncClaim(_AsyncInterceptor):
    """Adds the claimed principal to unary calls. The two streams (Subscribe,
    Connect) pass ``Credentials.metadata()`` themselves: an interceptor on a
    stream-stream call wraps every message of the busiest path."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_with_claim(client_call_details, self.metadata), request)


class _SyncClaim(_SyncInterceptor):
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata = metadata

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(_with_claim(client_call_details, self.metadata), request)


#: channel options of a TLS channel to a master: the name its certificate must carry
_MASTER_OPTIONS = [*_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", MASTER_TLS_NAME)]


def make_channel(address: str, credentials: Credentials | None = None) -> grpc.aio.Channel:
    """A channel to a master. Over TLS the server must present a master's
    certificate (:data:`MASTER_TLS_NAME`), not just any of the CA's."""
    creds = credentials or Credentials()
    if creds.secure:
        return grpc.aio.secure_channel(
            address,
            grpc.ssl_channel_credentials(creds.root_certificates, creds.private_key, creds.certificate_chain),
            options=_MASTER_OPTIONS,
        )
    metadata = creds.metadata()
    # The stubs type interceptors as a placeholder class that must be cast.
    interceptors = cast(list[grpc.aio.ClientInterceptor], [_AsyncClaim(metadata)]) if metadata else None
    return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS, interceptors=interceptors)


def make_sync_channel(address: str, credentials: Credentials | None = None) -> grpc.Channel:
    """A blocking channel to a master, for the CLI's one-shot operator calls."""
    creds = credentials or Credentials()
    if creds.secure:
        return grpc.secure_channel(
            address,
            grpc.ssl_channel_credentials(creds.root_certificates, creds.private_key, creds.certificate_chain),
            options=_MASTER_OPTIONS,
        )
    channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    metadata = creds.metadata()
    return grpc.intercept_channel(channel, _SyncClaim(metadata)) if metadata else channel
