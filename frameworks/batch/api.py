"""The batch service's API for the CLI: HTTP/1.1 + JSON on loopback.

    GET  /v1/state               framework id, master, connected
    GET  /v1/jobs                every job (summaries) and periodic job
    POST /v1/jobs                {"spec": {...job table...}, "default_name": "x"} -> {"job_id": ...}
    GET  /v1/jobs/ID             the job, its tasks and every attempt (?tasks=0: the summary only)
    POST /v1/jobs/ID/cancel      cancel a job, or remove a periodic job

A bad spec is a 400 whose ``error`` names the key; an unknown id a 404. The
server is a few lines on asyncio streams (one request per connection), so it
runs in the engine's event loop and needs no lock. It listens on loopback only:
anyone on the host who can reach it can submit work, as anyone who can reach
the master can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import structlog

from corral.errors import CorralError
from corral.frameworks.batch.engine import BatchEngine, UnknownJobError
from corral.frameworks.batch.spec import JobSpecError

log = structlog.get_logger(__name__)
MAX_BODY = 8 << 20
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Too Large"}


class BatchApiError(CorralError):
    """The batch service refused a request (the message says why) or is unreachable."""


class ApiServer:
    """Serves :class:`BatchEngine` over HTTP on ``listen`` (HOST:PORT, port 0: any)."""

    def __init__(
        self,
        engine: BatchEngine,
        listen: str = "127.0.0.1:0",
        state: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.engine = engine
        self.listen = listen
        self.state = state or (lambda: {"framework_id": engine.framework_id})
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
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._request(reader), 10.0)
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError) as e:
            status, body = 400, {"error": f"bad request: {e!r}"}
        except Exception as e:  # a bug must not take the service down
            log.exception("batch.api_failed")
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

    def route(self, method: str, path: str, body: Any, query: str = "") -> tuple[int, Any]:
        """One request -> (HTTP status, JSON body)."""
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            return 404, {"error": f"no such endpoint {path!r}"}
        parts = parts[1:]
        try:
            match method, parts:
                case "GET", ["state"]:
                    return 200, self.state()
                case "GET", ["jobs"]:
                    return 200, self.engine.jobs_view()
                case "POST", ["jobs"]:
                    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
                        return 400, {"error": 'body: expected {"spec": {...the job table...}}'}
                    default = body.get("default_name", "job")
                    return 200, self.engine.submit(body["spec"], default_name=str(default))
                case "GET", ["jobs", job_id]:
                    return 200, self.engine.job_view(job_id, with_tasks="tasks=0" not in query.split("&"))
                case "POST", ["jobs", job_id, "cancel"]:
                    return 200, {"id": job_id, "result": self.engine.cancel(job_id)}
                case _:
                    return 404, {"error": f"no such endpoint: {method} {path}"}
        except JobSpecError as e:
            return 400, {"error": str(e)}
        except UnknownJobError as e:
            return 404, {"error": f"no job {e.args[0]!r}"}


class BatchClient:
    """A blocking client of :class:`ApiServer` (the CLI's)."""

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
            raise BatchApiError(message) from None
        except (urllib.error.URLError, OSError) as e:
            raise BatchApiError(f"cannot reach the batch service at {self.address}: {e}") from None

    def state(self) -> dict[str, Any]:
        return dict(self._call("GET", "state"))

    def submit(self, spec: dict[str, Any], default_name: str = "job") -> dict[str, str]:
        return dict(self._call("POST", "jobs", {"spec": spec, "default_name": default_name}))

    def jobs(self) -> dict[str, Any]:
        return dict(self._call("GET", "jobs"))

    def job(self, job_id: str, with_tasks: bool = True) -> dict[str, Any]:
        return dict(self._call("GET", f"jobs/{job_id}" + ("" if with_tasks else "?tasks=0")))

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"jobs/{job_id}/cancel", {}))
