"""The batch service's API for the CLI: HTTP/1.1 + JSON on loopback
(the server and client plumbing are :mod:`corral.frameworks.http_api`'s).

    GET  /v1/state               framework id, master, connected
    GET  /v1/jobs                every job (summaries) and periodic job
    POST /v1/jobs                {"spec": {...job table...}, "default_name": "x"} -> {"job_id": ...}
    GET  /v1/jobs/ID             the job, its tasks and every attempt (?tasks=0: the summary only)
    POST /v1/jobs/ID/cancel      cancel a job, or remove a periodic job
    POST /v1/jobs/ID/hold        keep its pending tasks from launching
    POST /v1/jobs/ID/release     let them launch again
    POST /v1/jobs/ID/requeue     run an ended job again ({"failed_only": true}: its failed tasks)
    GET  /v1/pending             per pending task group: the checkers' reasons, the smallest change

A bad spec is a 400 whose ``error`` names the key; an unknown id a 404; a
request the job's state does not allow (hold an ended job) a 409.
"""

from __future__ import annotations

from typing import Any

from corral.errors import ApiError
from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.spec import JobSpecError
from corral.frameworks.batch.views import JobStateError, UnknownJobError
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
                case "POST", ["jobs", job_id, "hold"]:
                    return 200, {"id": job_id, "result": self.engine.hold(job_id)}
                case "POST", ["jobs", job_id, "release"]:
                    return 200, {"id": job_id, "result": self.engine.release(job_id)}
                case "POST", ["jobs", job_id, "requeue"]:
                    failed_only = isinstance(body, dict) and body.get("failed_only") is True
                    return 200, {"id": job_id, "result": self.engine.requeue(job_id, failed_only)}
                case _:
                    return None
        except JobSpecError as e:
            return 400, {"error": str(e)}
        except UnknownJobError as e:
            return 404, {"error": f"no job {e.args[0]!r}"}
        except JobStateError as e:
            return 409, {"error": str(e)}


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

    def hold(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"jobs/{job_id}/hold", {}))

    def release(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"jobs/{job_id}/release", {}))

    def requeue(self, job_id: str, failed_only: bool = False) -> dict[str, Any]:
        return dict(self._call("POST", f"jobs/{job_id}/requeue", {"failed_only": failed_only}))
