"""The batch service's API for the CLI: HTTP/1.1 + JSON on loopback
(the server and client plumbing are :mod:`corral.frameworks.http_api`'s).

    GET  /v1/state               framework id, master, connected
    GET  /v1/jobs                every job (summaries) and periodic job
    POST /v1/jobs                {"spec": {...job table...}, "default_name": "x"} -> {"job_id": ...}
    GET  /v1/jobs/ID             the job, its tasks and every attempt (?tasks=0: the summary only)
    POST /v1/jobs/ID/cancel      cancel a job, or remove a periodic job
    GET  /v1/pending             per pending task group: the checkers' reasons, the smallest change

A bad spec is a 400 whose ``error`` names the key; an unknown id a 404.
"""

from __future__ import annotations

from typing import Any

from corral.errors import ApiError
from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.spec import JobSpecError
from corral.frameworks.batch.views import UnknownJobError
from corral.frameworks.http_api import EngineApiServer, JsonClient


class BatchApiError(ApiError):
    """The batch service refused a request (the message says why) or is unreachable."""


class ApiServer(EngineApiServer[BatchEngine]):
    """Serves :class:`BatchEngine` over HTTP on ``listen`` (HOST:PORT, port 0: any)."""

    api_name = "batch"

    def route_v1(self, method: str, parts: list[str], body: Any, query: str) -> tuple[int, Any] | None:
        try:
            match method, parts:
                case "GET", ["jobs"]:
                    return 200, self.engine.jobs_view()
                case "POST", ["jobs"]:
                    if not isinstance(body, dict) or not isinstance(body.get("spec"), dict):
                        return 400, {"error": 'body: expected {"spec": {...the job table...}}'}
                    default = body.get("default_name", "job")
                    return 200, self.engine.submit(body["spec"], default_name=str(default))
                case "GET", ["jobs", job_id]:
                    return 200, self.engine.job_view(job_id, with_tasks="tasks=0" not in query.split("&"))
                case "GET", ["pending"]:
                    return 200, {"pending": self.engine.explain()}
                case "POST", ["jobs", job_id, "cancel"]:
                    return 200, {"id": job_id, "result": self.engine.cancel(job_id)}
                case _:
                    return None
        except JobSpecError as e:
            return 400, {"error": str(e)}
        except UnknownJobError as e:
            return 404, {"error": f"no job {e.args[0]!r}"}


class BatchClient(JsonClient):
    """A blocking client of :class:`ApiServer` (the CLI's)."""

    error = BatchApiError
    what = "the batch service"

    def submit(self, spec: dict[str, Any], default_name: str = "job") -> dict[str, str]:
        return dict(self._call("POST", "jobs", {"spec": spec, "default_name": default_name}))

    def jobs(self) -> dict[str, Any]:
        return dict(self._call("GET", "jobs"))

    def job(self, job_id: str, with_tasks: bool = True) -> dict[str, Any]:
        return dict(self._call("GET", f"jobs/{job_id}" + ("" if with_tasks else "?tasks=0")))

    def pending(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "pending")["pending"])

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"jobs/{job_id}/cancel", {}))
