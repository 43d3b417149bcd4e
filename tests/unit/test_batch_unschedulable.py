"""Never-fits and explanations in the batch and service engines, fed the
cluster's agents as ListAgents would (no cluster)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from corral.frameworks.batch.engine import BatchEngine
from corral.frameworks.batch.store import Store
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.placement import Candidate
from corral.frameworks.service.engine import ServiceEngine
from corral.frameworks.service.store import ServiceStore
from corral.frameworks.types import MasterInfo, Offer, Task
from corral.resources import Resources


class Driver:
    """The driver verbs the engine uses, recorded."""

    def __init__(self) -> None:
        self.launched: list[Task] = []
        self.declined: list[str] = []
        self.connected = asyncio.Event()
        self.connected.set()

    def launch(self, offer: Offer, tasks: list[Task], refuse_s: float | None = None) -> None:
        self.launched.extend(tasks)

    def decline(self, offer: Offer, refuse_s: float | None = None) -> None:
        self.declined.append(offer.id)

    def reconcile(self, tasks: list[tuple[str, str]]) -> None: ...

    def suppress(self) -> None: ...

    def revive(self) -> None: ...


NEVER = "no agent can ever fit this task: cpus 1 asked, the largest agent has 0.666"


def small_agents(n: int = 3) -> list[Candidate]:
    r = Resources.of(cpus=0.666, mem=1024)
    return [Candidate(f"a{i}", f"host-{i}", r, total=r) for i in range(n)]


def job(**group: Any) -> dict[str, Any]:
    return {"name": "j", "tasks": [{"name": "g", "command": "true", "cpus": 1, "mem": 64, **group}]}


def test_a_task_no_agent_can_ever_fit_fails_at_once_saying_why() -> None:
    engine = BatchEngine(Store(":memory:"))
    engine.set_agents(small_agents())
    job_id = engine.submit(job())["job_id"]
    view = engine.job_view(job_id)
    assert view["state"] == "FAILED"
    assert view["tasks"][0]["state"] == "FAILED"
    assert view["tasks"][0]["message"] == f"unschedulable: {NEVER}"


def test_with_wait_for_agents_it_waits_shown_unschedulable_until_an_agent_joins() -> None:
    engine = BatchEngine(Store(":memory:"))
    engine.set_agents(small_agents())
    job_id = engine.submit(job(wait_for_agents=True))["job_id"]
    summary = engine.job_view(job_id, with_tasks=False)
    assert summary["state"] == "RUNNING"
    assert summary["counts"] == {"PENDING": 1}
    assert summary["unschedulable"] == {"g": NEVER}
    assert engine.job_view(job_id)["tasks"][0]["message"].startswith(f"unschedulable: {NEVER}; waiting")
    big = Resources.of(cpus=2, mem=1024)
    engine.set_agents([*small_agents(), Candidate("a9", "host-9", big, total=big)])
    assert engine.job_view(job_id, with_tasks=False)["unschedulable"] == {}
    assert engine.job_view(job_id)["tasks"][0]["message"] == ""


def test_no_agent_listed_is_no_verdict() -> None:
    engine = BatchEngine(Store(":memory:"))
    engine.set_agents([])
    job_id = engine.submit(job())["job_id"]
    assert engine.job_view(job_id, with_tasks=False)["counts"] == {"PENDING": 1}


async def test_explain_names_the_checkers_offers_and_the_smallest_change() -> None:
    engine = BatchEngine(Store(":memory:"))
    driver = cast(SchedulerDriver, Driver())
    await engine.registered(driver, "fw-1", MasterInfo("m", "127.0.0.1:5050", "test"))
    job_id = engine.submit(job(constraints=["rack == r1"]))["job_id"]
    offer = Offer("o1", "a1", "host-1", Resources.of(cpus=4, mem=4096), {"rack": "r2"})
    await engine.offers(driver, [offer])
    busy = Candidate(
        "a2", "host-2", Resources.of(cpus=0.5, mem=4096), {"rack": "r1"}, total=Resources.of(cpus=4, mem=4096)
    )
    other = Candidate(
        "a1", "host-1", Resources.of(cpus=4, mem=4096), {"rack": "r2"}, total=Resources.of(cpus=4)
    )
    engine.set_agents([busy, other])
    (entry,) = engine.explain()
    assert entry["job_id"] == job_id
    assert entry["tasks"] == [f"{job_id}.g.0"]
    assert entry["offers_refused"] == {
        "constraints": {"count": 1, "agents": ["host-1: constraint rack == r1 not met"]}
    }
    assert entry["never_fits"] == ""
    assert entry["rejected"]["constraints"]["count"] == 1
    assert entry["rejected"]["resources"]["count"] == 1
    assert entry["smallest_change"] == "free 0.5 cpus on agent host-2"


def test_service_explain_and_never_fits() -> None:
    engine = ServiceEngine(ServiceStore(":memory:"))
    engine.deploy({"name": "web", "command": "x", "instances": 2, "cpus": 1, "mem": 64})
    engine.set_agents(small_agents())
    assert engine.services_view()[0]["unschedulable"] == NEVER
    (entry,) = engine.explain()
    assert entry["service"] == "web"
    assert entry["wanted"] == 2
    assert entry["never_fits"] == NEVER
    assert entry["smallest_change"].startswith("lower the request to cpus 0.666, mem 64")


async def test_batch_bin_packs_and_service_spreads_over_the_offers_of_one_call() -> None:
    big = Offer("o-big", "a1", "host-1", Resources.of(cpus=8, mem=8192))
    small = Offer("o-small", "a2", "host-2", Resources.of(cpus=1, mem=1024))
    master = MasterInfo("m", "127.0.0.1:5050", "test")

    batch = BatchEngine(Store(":memory:"))
    driver = Driver()
    await batch.registered(cast(SchedulerDriver, driver), "fw-1", master)
    batch.submit(job())
    await batch.offers(cast(SchedulerDriver, driver), [big, small])
    assert driver.declined == ["o-big"]  # the task went where it fills most

    service = ServiceEngine(ServiceStore(":memory:"))
    sdriver = Driver()
    await service.registered(cast(SchedulerDriver, sdriver), "fw-2", master)
    service.deploy({"name": "web", "command": "x", "instances": 1, "cpus": 1, "mem": 64})
    await service.offers(cast(SchedulerDriver, sdriver), [small, big])
    assert sdriver.declined == ["o-small"]  # the instance went where most is left
