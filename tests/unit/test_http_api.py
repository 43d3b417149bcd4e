"""frameworks/http_api.py: the routing every framework API shares (state,
unknown endpoints), and the batch and service APIs built on it."""

from __future__ import annotations

from corral.frameworks.batch.api import ApiServer
from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.store import Store
from corral.frameworks.service.api import ServiceApiServer
from corral.frameworks.service.engine import ServiceEngine
from corral.frameworks.service.store import ServiceStore


def test_both_framework_apis_share_state_and_unknown_endpoints() -> None:
    batch = BatchEngine(Store(":memory:"))
    batch.framework_id = "fw-b"
    service = ServiceEngine(ServiceStore(":memory:"))
    service.framework_id = "fw-s"
    for api, fw in [(ApiServer(batch), "fw-b"), (ServiceApiServer(service), "fw-s")]:
        assert api.route("GET", "/v1/state", {}) == (200, {"framework_id": fw})
        assert api.route("GET", "/v2/state", {}) == (404, {"error": "no such endpoint '/v2/state'"})
        assert api.route("DELETE", "/v1/nothing", {}) == (
            404,
            {"error": "no such endpoint: DELETE /v1/nothing"},
        )
    custom = ApiServer(batch, state=lambda: {"connected": True})
    assert custom.route("GET", "/v1/state", {}) == (200, {"connected": True})


def test_the_batch_api_routes_to_its_engine() -> None:
    api = ApiServer(BatchEngine(Store(":memory:")))
    code, answer = api.route(
        "POST", "/v1/jobs", {"spec": {"tasks": [{"command": "true"}]}, "default_name": "x"}
    )
    assert code == 200
    assert api.route("GET", f"/v1/jobs/{answer['job_id']}", {}, "tasks=0")[1]["name"] == "x"
    assert api.route("POST", "/v1/jobs", {"spec": {"tasks": []}})[0] == 400
    assert api.route("GET", "/v1/jobs/nope", {}) == (404, {"error": "no job 'nope'"})


def test_the_service_api_routes_to_its_engine() -> None:
    api = ServiceApiServer(ServiceEngine(ServiceStore(":memory:")))
    assert api.route("GET", "/v1/services", {}) == (200, {"services": []})
    assert api.route("POST", "/v1/services", {})[0] == 400
    assert api.route("GET", "/v1/services/nope", {}) == (404, {"error": "no service named 'nope'"})
