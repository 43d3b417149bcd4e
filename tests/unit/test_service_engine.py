"""The service engine's placement and failure rules, with offers made up here
and a driver that records calls (the cluster tests cover the real thing)."""

from __future__ import annotations

from typing import Any

from corral.frameworks.service.engine import ServiceEngine
from corral.frameworks.service.store import ServiceStore
from corral.frameworks.types import Offer, Task, TaskState, TaskStatus
from corral.resources import RangeSet, Resources


class FakeDriver:
    def __init__(self) -> None:
        self.launched: list[tuple[str, list[Task]]] = []
        self.declined: list[str] = []
        self.killed: list[str] = []

    def launch(self, offer: Offer, tasks: list[Task], refuse_s: float | None = None) -> None:
        self.launched.append((offer.agent_id, list(tasks)))

    def decline(self, offer: Offer, refuse_s: float | None = None) -> None:
        self.declined.append(offer.agent_id)

    def kill(self, task_id: str, agent_id: str = "") -> None:
        self.killed.append(task_id)

    def suppress(self) -> None:
        pass

    def revive(self) -> None:
        pass

    class connected:
        @staticmethod
        def is_set() -> bool:
            return True


def offer(agent: str, **attributes: str) -> Offer:
    resources = Resources.of(cpus=4, mem=4096, ranges={"ports": RangeSet.of([(31000, 31009)])})
    return Offer(f"o-{agent}", agent, f"host-{agent}", resources, attributes)


def engine_with(spec: dict[str, Any]) -> tuple[ServiceEngine, FakeDriver, list[float]]:
    now = [1000.0]
    engine = ServiceEngine(ServiceStore(":memory:"), clock=lambda: now[0])
    driver = FakeDriver()
    engine.driver = driver  # type: ignore[assignment]
    engine.deploy(spec)
    return engine, driver, now


OFFERS = [
    offer("a1", rack="r1", zone="a"),
    offer("a2", rack="r1", zone="a"),
    offer("a3", rack="r2", zone="a"),
    offer("a4", rack="r3", zone="b"),
    offer("a5", zone="a"),
]


async def test_one_per_rack_and_zone_constraint() -> None:
    engine, driver, _ = engine_with(
        {"name": "s", "command": "x", "instances": 3, "constraints": ["unique rack", "zone == a"]}
    )
    await engine.offers(driver, OFFERS)  # type: ignore[arg-type]
    placed = {agent for agent, _ in driver.launched}
    # r1 once, r2 once; a4 is zone b; a5 has no rack; the third instance waits.
    assert placed in ({"a1", "a3"}, {"a2", "a3"})
    assert engine.wanted["s"] == 1
    assert engine.services_view()[0]["waiting"] in (
        "host-a5: unique rack: the agent has no attribute 'rack'",
        "host-a2: unique rack: an instance runs on rack=r1",
        "host-a1: unique rack: an instance runs on rack=r1",
    )


async def test_unique_host_spreads_and_ports_come_from_the_offer() -> None:
    engine, driver, _ = engine_with(
        {"name": "s", "command": "x", "instances": 3, "ports": 2, "unique_host": True}
    )
    await engine.offers(driver, [OFFERS[0], OFFERS[0], OFFERS[1]])  # type: ignore[arg-type]
    assert [agent for agent, _ in driver.launched] == ["a1", "a2"]
    task = driver.launched[0][1][0]
    assert task.task_id == "s.1.v1"
    assert (task.env["PORT0"], task.env["PORT1"]) == ("31000", "31001")


async def test_failures_back_off_and_lost_instances_are_replaced_at_once() -> None:
    engine, driver, now = engine_with(
        {"name": "s", "command": "x", "instances": 1, "restart": {"backoff_s": 2, "backoff_max_s": 8}}
    )
    await engine.offers(driver, [OFFERS[0]])  # type: ignore[arg-type]
    first = driver.launched[-1][1][0].task_id
    await engine.status_update(driver, TaskStatus(first, TaskState.FAILED, agent_id="a1"))  # type: ignore[arg-type]
    assert engine.services["s"].not_before == now[0] + 2
    await engine.offers(driver, [OFFERS[1]])  # type: ignore[arg-type]
    assert len(driver.launched) == 1, "waits for the backoff"
    now[0] += 2.1
    await engine.offers(driver, [OFFERS[1]])  # type: ignore[arg-type]
    second = driver.launched[-1][1][0].task_id
    assert second == "s.2.v1"
    await engine.status_update(driver, TaskStatus(second, TaskState.LOST, agent_id="a2"))  # type: ignore[arg-type]
    assert engine.services["s"].failures == 1, "a lost instance is not a failure"
    await engine.offers(driver, [OFFERS[2]])  # type: ignore[arg-type]
    assert driver.launched[-1][1][0].task_id == "s.3.v1"
