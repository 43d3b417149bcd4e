"""The service framework's API for the CLI: HTTP/1.1 + JSON on loopback.

    GET  /v1/state                   framework id, master, connected
    GET  /v1/services                every service (summaries)
    POST /v1/services                {"spec": {...}, "default_name": "x"} -> {"name", "version", "result"}
    GET  /v1/services/NAME           the service, its spec and its recent instances
    POST /v1/services/NAME/scale     {"instances": N}
    POST /v1/services/NAME/remove    stop every instance, then forget the service
    GET  /v1/pending                 per service waiting to start instances: the checkers' reasons,
                                     the smallest change that would place one

A bad spec is a 400 whose ``error`` names the key; an unknown name a 404.
"""

from __future__ import annotations

from typing import Any

from corral.errors import ApiError
from corral.frameworks.http_api import EngineApiServer, JsonClient
from corral.frameworks.service.engine import ServiceEngine, UnknownServiceError
from corral.frameworks.service.spec import ServiceSpecError


class ServiceApiError(ApiError):
    """The service framework refused a request (the message says why) or is unreachable."""


class ServiceApiServer(EngineApiServer[ServiceEngine]):
    """Serves :class:`ServiceEngine` over HTTP on ``listen``."""

    api_name = "service"

    def route_v1(self, method: str, parts: list[str], body: Any, query: str) -> tuple[int, Any] | None:
        body = body if isinstance(body, dict) else {}
        try:
            match method, parts:
                case "GET", ["services"]:
                    return 200, {"services": self.engine.services_view()}
                case "POST", ["services"]:
                    if not isinstance(body.get("spec"), dict):
                        return 400, {"error": 'body: expected {"spec": {...the service table...}}'}
                    return 200, self.engine.deploy(body["spec"], str(body.get("default_name", "service")))
                case "GET", ["pending"]:
                    return 200, {"pending": self.engine.explain()}
                case "GET", ["services", name]:
                    return 200, self.engine.service_view(name)
                case "POST", ["services", name, "scale"]:
                    return 200, self.engine.scale(name, body.get("instances"))
                case "POST", ["services", name, "remove"]:
                    return 200, self.engine.remove(name)
                case _:
                    return None
        except ServiceSpecError as e:
            return 400, {"error": str(e)}
        except UnknownServiceError as e:
            return 404, {"error": f"no service named {e.args[0]!r}"}


class ServiceClient(JsonClient):
    """A blocking client of :class:`ServiceApiServer` (the CLI's)."""

    error = ServiceApiError
    what = "the service framework"

    def deploy(self, spec: dict[str, Any], default_name: str = "service") -> dict[str, Any]:
        return dict(self._call("POST", "services", {"spec": spec, "default_name": default_name}))

    def services(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "services")["services"])

    def service(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"services/{name}"))

    def scale(self, name: str, instances: int) -> dict[str, Any]:
        return dict(self._call("POST", f"services/{name}/scale", {"instances": instances}))

    def pending(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "pending")["pending"])

    def remove(self, name: str) -> dict[str, Any]:
        return dict(self._call("POST", f"services/{name}/remove", {}))
