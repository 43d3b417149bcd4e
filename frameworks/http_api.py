"""HTTP/1.1 + JSON on loopback, for the bundled frameworks' APIs (batch,
service) and the CLI's clients.

The server is a few lines on asyncio streams (one request per connection), so
it runs in its framework's event loop and needs no lock. A subclass supplies
:meth:`JsonServer.route`; a framework's API subclasses :class:`EngineApiServer`,
which serves ``GET /v1/state`` and hands the rest of ``/v1/...`` to
:meth:`EngineApiServer.route_v1`. It listens on loopback only.

It is a door to the cluster (a submitted job runs as root), so with
credentials it speaks mutual TLS with the cluster's CA, as the master does:
the client's certificate must be signed by that CA, and the master's ACL
policy decides, action ``use_api`` on ``api:NAME:read`` (GET) or
``api:NAME:write`` (anything else), NAME the framework's kind (``batch``,
``service``). Without a policy file the built-in policy applies: operators
(``operator:NAME``) only. A refusal is 403 naming the principal, the action
and the rule. Without credentials (a plaintext cluster on loopback) anyone on
the host who can reach it can submit work, as anyone who can reach the
master can.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import structlog

from corral.errors import ApiError
from corral.identity import Principal
from corral.master.authz import Authorizer
from corral.transport import Credentials

log = structlog.get_logger(__name__)
MAX_BODY = 8 << 20
_REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Too Large",
}


def _files(credentials: Credentials) -> tuple[str, str, str]:
    if credentials.files is None:
        # The stdlib loads a key pair from files only.
        raise ValueError(
            "TLS for the HTTP API needs credentials read from files (corral.pki.load_credentials)"
        )
    return credentials.files


def server_tls(credentials: Credentials) -> ssl.SSLContext:
    """Mutual TLS for a server: a client certificate signed by the CA is required."""
    _, cert, key = _files(credentials)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cadata=(credentials.root_certificates or b"").decode())
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_tls(credentials: Credentials) -> ssl.SSLContext:
    """Mutual TLS for a client: the server must hold a certificate of the CA for
    the name dialled (the frameworks' certificates name localhost and loopback)."""
    _, cert, key = _files(credentials)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cadata=(credentials.root_certificates or b"").decode())
    return context


def peer_principal(writer: asyncio.StreamWriter) -> Principal | None:
    """The principal of a TLS peer's certificate (CN ``KIND:NAME``); None without TLS.
    A certificate whose CN is not a principal is the anonymous one, authenticated."""
    if writer.get_extra_info("sslcontext") is None:
        return None
    cert = writer.get_extra_info("peercert") or {}
    common_name = next(
        (value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"), ""
    )
    try:
        return Principal.parse(str(common_name), authenticated=True)
    except ValueError:
        return Principal("anonymous", str(common_name) or "anonymous", authenticated=True)


class JsonServer:
    """Serves :meth:`route` over HTTP on ``listen`` (HOST:PORT, port 0: any);
    over mutual TLS, to operators only, when ``credentials`` hold a certificate."""

    #: the ``api:NAME`` of the ACL objects this server is asked about
    api_name = "api"

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        credentials: Credentials | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.listen = listen
        self.address = ""
        self.tls = server_tls(credentials) if credentials is not None and credentials.secure else None
        #: the master's policy (``--acls``), or the built-in one
        self.authorizer = authorizer or Authorizer()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        host, _, port = self.listen.rpartition(":")
        tls: dict[str, Any] = {"ssl": self.tls, "ssl_handshake_timeout": 10.0} if self.tls else {}
        self._server = await asyncio.start_server(self._handle, host or "127.0.0.1", int(port), **tls)
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

    def refuse(self, principal: Principal | None, method: str = "GET") -> tuple[int, Any] | None:
        """A 403 for a TLS peer the policy does not let ``use_api`` here
        (None: let it in). Without TLS there is no principal to ask about."""
        if principal is None:
            return None
        self.authorizer.reload_if_changed()  # one stat: the master's file may have changed
        kind = "read" if method in ("GET", "HEAD") else "write"
        decision = self.authorizer.policy.decide(str(principal), "use_api", f"api:{self.api_name}:{kind}")
        if decision.allowed:
            return None
        log.warning("api.refused", server=type(self).__name__, principal=str(principal), why=decision.message)
        return 403, {"error": decision.message}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10.0):
                status, body = await self._request(reader, peer_principal(writer))
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

    async def _request(self, reader: asyncio.StreamReader, principal: Principal | None) -> tuple[int, Any]:
        """Read one request and route it, or answer its refusal (read first,
        so the client is not reset while it is still sending its body)."""
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
        raw = await reader.readexactly(length) if length else b""
        refusal = self.refuse(principal, method)
        if refusal is not None:
            return refusal
        body = json.loads(raw) if raw else {}
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
        credentials: Credentials | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        super().__init__(listen, credentials, authorizer)
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
    error: type[ApiError] = ApiError
    #: for the "cannot reach" message
    what = "the service"

    def __init__(self, address: str, timeout_s: float = 10.0, credentials: Credentials | None = None) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.tls = client_tls(credentials) if credentials is not None and credentials.secure else None

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        scheme = "https" if self.tls is not None else "http"
        req = urllib.request.Request(
            f"{scheme}://{self.address}/v1/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self.tls) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", str(e))
            except ValueError:
                message = str(e)
            raise self.error(message, e.code) from None
        except (urllib.error.URLError, OSError) as e:
            raise self.error(f"cannot reach {self.what} at {self.address}: {e}") from None

    def state(self) -> dict[str, Any]:
        """``GET /v1/state``: the framework id, the master, whether it is connected."""
        return dict(self._call("GET", "state"))
