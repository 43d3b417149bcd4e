"""Prometheus metrics of masters and agents, through ``prometheus-client``.

What Mesos' ``/metrics/snapshot`` and Nomad's ``/v1/metrics`` give operators:
gauges read from the process's state at scrape time (agents, tasks by state,
resources), counters kept as things happen, histograms of latencies, and the
process's own ``process_*`` and ``python_*`` figures. prometheus-client does
the exposition (text format 0.0.4, or OpenMetrics when the scraper's
``Accept`` asks for it), the metric families and the histograms; the
collectors in ``master/metrics.py`` and ``slave/metrics.py`` read the state.

Why the HTTP server is ours, on the event loop, and not prometheus-client's
``start_http_server``: the master's and the agent's state is changed by
transitions on the asyncio loop and is consistent only between them. The
client's server runs ``collect()`` in a thread of its own, which would read
dicts while the loop changes them (or need a lock in every transition). Here
a scrape is one synchronous ``generate_latest`` on the loop, so it reads
a consistent state without locks. The server stays small and bounded, as the
client's thread-per-connection server is not: one GET per connection, 8 KiB
and 5 s per request, at most 32 connections at once (more are dropped).
Start it with ``--metrics-listen HOST:PORT`` on ``corral master``,
``corral agent`` and ``corral local``. It is plain HTTP without
authentication, as the metrics have always been: bind it to loopback or a
management network (docs/operator.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence

import structlog
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.errors import ListenError
from corral.resources import MILLI, Resources

log = structlog.get_logger(__name__)

_MAX_REQUEST_BYTES = 8192
_REQUEST_TIMEOUT_S = 5.0
_MAX_CONNECTIONS = 32

#: Histogram buckets, in seconds. A launch can wait for an image to unpack
#: (minutes); an allocation cycle takes milliseconds; an acknowledgement comes
#: back within milliseconds unless the framework is slow or away.
LAUNCH_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ALLOCATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUND_TRIP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


def process_registry() -> CollectorRegistry:
    """A registry of its own (never the client's global one: ``corral local``
    and the tests run several masters and agents in one process) holding
    the ``process_*`` and ``python_*`` collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def labelled(families: Iterable[Metric], labels: dict[str, str]) -> Iterator[Metric]:
    """``families`` with ``labels`` added to every sample (to tell apart the
    agents that ``corral local`` serves on one endpoint)."""
    for family in families:
        if not labels:
            yield family
            continue
        out = Metric(family.name, family.documentation, family.type, family.unit)
        for s in family.samples:
            out.add_sample(s.name, {**labels, **s.labels}, s.value, s.timestamp, s.exemplar)
        yield out


def merged(families: Iterable[Metric]) -> list[Metric]:
    """Families of the same name joined into one (its samples in order): an
    exposition must not name a family twice."""
    by_name: dict[str, Metric] = {}
    for family in families:
        known = by_name.get(family.name)
        if known is None:
            by_name[family.name] = family
        else:
            known.samples.extend(family.samples)
    return list(by_name.values())


class MetricsServer:
    """Serves ``registry`` at ``GET /metrics``; ``GET /health`` answers ``ok``.

    >>> server = MetricsServer("127.0.0.1:0", process_registry())  # doctest: +SKIP
    >>> await server.start(); print(server.address); await server.stop()
    """

    def __init__(self, listen: str, registry: Collector) -> None:
        self.listen = listen
        self.registry = registry
        self.address = ""
        self._server: asyncio.Server | None = None
        self._open = 0

    @property
    def open_connections(self) -> int:
        return self._open

    async def start(self) -> str:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"metrics listen address: expected HOST:PORT, got {self.listen!r}")
        try:
            self._server = await asyncio.start_server(
                self._serve, host.strip("[]"), int(port), limit=_MAX_REQUEST_BYTES
            )
        except OSError as e:
            raise ListenError(f"metrics listen address {self.listen}: {e.strerror or e}") from None
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
        content_type = "text/plain; charset=utf-8"
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, content_type = self._answer(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            status, body = "400 Bad Request", b"a request is one GET line and headers, under 8 KiB\n"
        except Exception:
            # A scrape must never take the process down; say so and carry on.
            log.exception("metrics.collect_failed")
            status, body = "500 Internal Server Error", b"collecting the metrics failed\n"
        writer.write(
            f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                await writer.drain()
            writer.close()
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                await writer.wait_closed()
        except (ConnectionError, TimeoutError):
            writer.transport.abort()  # a client that does not read: drop what is buffered

    def _answer(self, head: bytes) -> tuple[str, bytes, str]:
        plain = "text/plain; charset=utf-8"
        if len(head) > _MAX_REQUEST_BYTES:
            return "400 Bad Request", b"request too large\n", plain
        request_line, *header_lines = head.split(b"\r\n")
        method, _, rest = request_line.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method != b"GET":
            return "405 Method Not Allowed", b"only GET\n", plain
        if path == b"/metrics":
            encoder, content_type = choose_encoder(_header(header_lines, b"accept"))
            # Synchronous, on the event loop: the collectors see the state
            # between two transitions (see the module docstring).
            return "200 OK", encoder(self.registry), content_type
        if path == b"/health":
            return "200 OK", b"ok\n", plain
        return "404 Not Found", b"try /metrics\n", plain


def _header(lines: Sequence[bytes], name: bytes) -> str:
    for line in lines:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


_MIB = 1024 * 1024
#: resource name -> (metric name suffix, factor from the user unit); the
#: Prometheus convention is base units, so MiB become bytes.
_RESOURCE_FAMILIES = {
    "cpus": ("cpus", 1.0),
    "gpus": ("gpus", 1.0),
    "mem": ("memory_bytes", float(_MIB)),
    "disk": ("disk_bytes", float(_MIB)),
}


def resource_families(prefix: str, what: str, by_kind: Mapping[str, Resources]) -> list[Metric]:
    """Scalar resources as ``<prefix>_cpus``, ``_gpus``, ``_memory_bytes``,
    ``_disk_bytes`` (always there) and ``_scalar_resources{resource=...}`` (any
    other scalar an agent declares), each sample labelled ``kind`` (the keys of
    ``by_kind``; no label when the only key is "")."""
    fixed = {
        name: GaugeMetricFamily(
            f"{prefix}_{suffix}",
            f"{what}: {name}" + (" in bytes" if factor != 1.0 else "") + ".",
            labels=["kind"] if _kinds(by_kind) else [],
        )
        for name, (suffix, factor) in _RESOURCE_FAMILIES.items()
    }
    other = GaugeMetricFamily(
        f"{prefix}_scalar_resources",
        f"{what}: scalar resources other than cpus, gpus, mem and disk, in their own unit.",
        labels=["resource", "kind"] if _kinds(by_kind) else ["resource"],
    )
    for kind, res in by_kind.items():
        kind_labels = [kind] if kind else []
        names = {n for n in res.names() if res.scalar(n)} | set(_RESOURCE_FAMILIES)
        for name in sorted(names):
            amount = res.scalar(name) / MILLI
            if name in fixed:
                fixed[name].add_metric(kind_labels, amount * _RESOURCE_FAMILIES[name][1])
            else:
                other.add_metric([name, *kind_labels], amount)
    return [*fixed.values(), other]


def _kinds(by_kind: Mapping[str, Resources]) -> bool:
    return list(by_kind) != [""]
