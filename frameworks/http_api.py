"""HTTP/1.1 + JSON on loopback, for the bundled frameworks' APIs (batch,
service) and the CLI's clients.

The server is a few lines on asyncio streams (one request per connection), so
it runs in its framework's event loop and needs no lock. A subclass supplies
:meth:`JsonServer.route`; a framework's API subclasses :class:`EngineApiServer`,
which serves ``GET /v1/state`` and hands the rest of ``/v1/...`` to
:meth:`EngineApiServer.route_v1`. It listens on loopback only: anyone on the host who
can reach it can submit work, as anyone who can reach the master can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import structlog

from corral.errors import CorralError

log = structlog.get_logger(__name__)
MAX_BODY = 8 << 20
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Too Large"}


class JsonServer:
    """Serves :meth:`route` over HTTP on ``listen`` (HOST:PORT, port 0: any)."""

    def __init__(self, listen: str = "127.0.0.1:0") -> None:
        self.listen = listen
        self.address = ""
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        host, _, port = self.listen.rpartition(":")
        self._server = await asyncio.start_server(self._handle, host or "127.0.0.1", int(port))
        sock_host, sock_port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{sock_host}:{sock_port}"
        return self.address

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()

    def route(self, method: str, path: str, body: Any, query: str = "") -> tuple[int, Any]:
        """One request -> (HTTP status, JSON body); ``query`` is what follows ``?``."""
        return 404, {"error": f"no such endpoint: {method} {path}"}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10.0):
                status, body = await self._request(reader)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError) as e:
            status, body = 400, {"error": f"bad request: {e!r}"}
        except Exception as e:  # a bug must not take the service down
            log.exception("api.request_failed", server=type(self).__name__)
            status, body = 500, {"error": f"internal error: {e!r}"}
        data = json.dumps(body).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + data)
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        line = (await reader.readline()).decode("latin-1").split()
        if len(line) != 3:
            raise ValueError("malformed request line")
        method = line[0]
        path, _, query = line[1].partition("?")
        length = 0
        while True:
            header = (await reader.readline()).decode("latin-1")
            if header in ("\r\n", "\n", ""):
                break
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > MAX_BODY:
            return 413, {"error": f"request body over {MAX_BODY} bytes"}
        body = json.loads(await reader.readexactly(length)) if length else {}
        return self.route(method, path, body, query)


class FrameworkEngine(Protocol):
    """What :class:`EngineApiServer` needs of an engine."""

    framework_id: str


E = TypeVar("E", bound=FrameworkEngine)


class EngineApiServer(JsonServer, Generic[E]):
    """Serves a framework engine on ``listen``: ``GET /v1/state`` (``state()``,
    by default the framework id) and whatever :meth:`route_v1` answers."""

    def __init__(
        self,
        engine: E,
        listen: str = "127.0.0.1:0",
        state: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(listen)
        self.engine = engine
        self.state = state or (lambda: {"framework_id": engine.framework_id})

    def route(self, method: str, path: str, body: Any, query: str = "") -> tuple[int, Any]:
        """One request -> (HTTP status, JSON body)."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            return 404, {"error": f"no such endpoint {path!r}"}
        if method == "GET" and parts[1:] == ["state"]:
            return 200, self.state()
        answer = self.route_v1(method, parts[1:], body, query)
        return answer if answer is not None else (404, {"error": f"no such endpoint: {method} {path}"})

    def route_v1(self, method: str, parts: list[str], body: Any, query: str) -> tuple[int, Any] | None:
        """A request below ``/v1/`` (``parts``: the path's segments after it) ->
        (HTTP status, JSON body), or None: no such endpoint."""
        return None


class JsonClient:
    """A blocking client of a :class:`JsonServer`; refusals raise ``error``."""

    #: what a refusal or an unreachable server raises (subclasses narrow it)
    error: type[CorralError] = CorralError
    #: for the "cannot reach" message
    what = "the service"

    def __init__(self, address: str, timeout_s: float = 10.0) -> None:
        self.address = address
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{self.address}/v1/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", str(e))
            except ValueError:
                message = str(e)
            raise self.error(message) from None
        except (urllib.error.URLError, OSError) as e:
            raise self.error(f"cannot reach {self.what} at {self.address}: {e}") from None

    def state(self) -> dict[str, Any]:
        """``GET /v1/state``: the framework id, the master, whether it is connected."""
        return dict(self._call("GET", "state"))
