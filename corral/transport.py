"""The one place gRPC servers and channels are made.

Credentials enter here (DESIGN.md, "Security"): turning on mutual TLS later is
a configuration change, not a hunt through the code.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

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


@dataclass(frozen=True)
class Credentials:
    """TLS material; all None means plaintext (loopback and tests)."""

    root_certificates: bytes | None = None
    private_key: bytes | None = None
    certificate_chain: bytes | None = None

    @property
    def secure(self) -> bool:
        return self.certificate_chain is not None


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


def make_channel(address: str, credentials: Credentials | None = None) -> grpc.aio.Channel:
    creds = credentials or Credentials()
    if creds.secure:
        return grpc.aio.secure_channel(
            address,
            grpc.ssl_channel_credentials(creds.root_certificates, creds.private_key, creds.certificate_chain),
            options=_CHANNEL_OPTIONS,
        )
    return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS)


def make_sync_channel(address: str, credentials: Credentials | None = None) -> grpc.Channel:
    """A blocking channel, for the CLI's one-shot operator calls."""
    creds = credentials or Credentials()
    if creds.secure:
        return grpc.secure_channel(
            address,
            grpc.ssl_channel_credentials(creds.root_certificates, creds.private_key, creds.certificate_chain),
            options=_CHANNEL_OPTIONS,
        )
    return grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
