"""Metrics in the Prometheus text format, served over HTTP by masters and agents.

What Mesos' ``/metrics/snapshot`` and Nomad's ``/v1/metrics`` give operators:
gauges read from the process's state at scrape time (agents, tasks by state,
resources) and counters kept as things happen (tasks launched, allocation
cycles and their time). The format is Prometheus' text exposition format
0.0.4, which every common collector reads::

    # HELP corral_master_tasks Tasks the master knows, by state.
    # TYPE corral_master_tasks gauge
    corral_master_tasks{state="RUNNING"} 3

The server is the standard library's asyncio streams: one ``GET /metrics``
(and ``GET /health``) per connection, requests bounded in size and time,
at most 32 connections at once (more are dropped).
Start it with ``--metrics-listen HOST:PORT`` on ``corral master`` and
``corral agent``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

_MAX_REQUEST_BYTES = 8192
_REQUEST_TIMEOUT_S = 5.0
_MAX_CONNECTIONS = 32


@dataclass
class Metric:
    """One metric family: a name, its kind (``gauge`` or ``counter``) and its samples."""

    name: str
    help: str
    kind: str = "gauge"
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> Metric:
        self.samples.append((labels, value))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def render(metrics: Iterable[Metric]) -> str:
    """The text exposition of ``metrics`` (families in the order given)."""
    lines: list[str] = []
    for m in metrics:
        lines.append(f"# HELP {m.name} {m.help.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        lines.append(f"# TYPE {m.name} {m.kind}")
        for labels, value in m.samples:
            if labels:
                inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                lines.append(f"{m.name}{{{inner}}} {_number(value)}")
            else:
                lines.append(f"{m.name} {_number(value)}")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """Serves ``collect()`` rendered at ``GET /metrics``; ``GET /health`` answers ``ok``.

    >>> server = MetricsServer("127.0.0.1:0", lambda: [Metric("up", "Up.").add(1)])  # doctest: +SKIP
    >>> await server.start(); print(server.address); await server.stop()
    """

    def __init__(self, listen: str, collect: Callable[[], list[Metric]]) -> None:
        self.listen = listen
        self.collect = collect
        self.address = ""
        self._server: asyncio.Server | None = None
        self._open = 0

    async def start(self) -> str:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"metrics listen address: expected HOST:PORT, got {self.listen!r}")
        self._server = await asyncio.start_server(
            self._serve, host.strip("[]"), int(port), limit=_MAX_REQUEST_BYTES
        )
        bound = self._server.sockets[0].getsockname()
        self.address = f"{host}:{bound[1]}"
        log.info("metrics.serving", address=self.address)
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= _MAX_CONNECTIONS:
            # Scrapers need one connection; many slow ones must not take the
            # process's file descriptors.
            writer.transport.abort()
            return
        self._open += 1
        try:
            await self._serve_one(reader, writer)
        finally:
            self._open -= 1

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body = self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            status, body = "400 Bad Request", "a request is one GET line and headers, under 8 KiB\n"
        except Exception:
            # A scrape must never take the process down; say so and carry on.
            log.exception("metrics.collect_failed")
            status, body = "500 Internal Server Error", "collecting the metrics failed\n"
        data = body.encode()
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
            + data
        )
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                await writer.drain()
            writer.close()
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError):
            writer.transport.abort()  # a client that does not read: drop what is buffered

    def _answer(self, head: bytes) -> tuple[str, str]:
        if len(head) > _MAX_REQUEST_BYTES:
            return "400 Bad Request", "request too large\n"
        method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method != b"GET":
            return "405 Method Not Allowed", "only GET\n"
        if path == b"/metrics":
            return "200 OK", render(self.collect())
        if path == b"/health":
            return "200 OK", "ok\n"
        return "404 Not Found", "try /metrics\n"
