"""The service engine: keeps each service's instances running, healthy and
at the target version; every service, version and instance lives in a
:class:`~corral.frameworks.service.store.ServiceStore`.

An instance is one task at the master with id ``NAME.SEQ.vVERSION``; a
replacement always gets a new id. Each change (an update, an offer, a tick)
re-plans the service with :func:`~corral.frameworks.service.plan.plan`:

- an instance that ends on its own (FAILED, FINISHED, KILLED by its health
  check) is a *failure*: the next start waits a backoff that doubles per
  failure in a row (reset when an instance becomes healthy); one lost with its
  agent (LOST, GONE, UNREACHABLE, DROPPED) is replaced at once;
- a new version is rolled out within max-surge/max-unavailable counting only
  healthy instances (an instance is healthy when its health check says so,
  or, without a check, once RUNNING); a new instance not healthy within
  ``healthy_deadline_s`` is stopped and counts as a failure;
- ``rollback_after_failures`` failures of the version being deployed roll the
  service back to its last stable version, by the same rules (so healthy
  instances stay at or above ``instances - max_unavailable`` throughout).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from corral.errors import NotConnectedError
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.fit_change import pending_view
from corral.frameworks.interest import OfferInterest
from corral.frameworks.placement import (
    NO_SIBLINGS,
    Ask,
    Candidate,
    Reason,
    Siblings,
    feasible,
    need,
    never_fits,
    order_offers,
    spread,
)
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.service.plan import Live, min_healthy, plan
from corral.frameworks.service.spec import ServiceSpec, ServiceSpecError, parse_service, same_deployment
from corral.frameworks.service.store import InstanceRow, ServiceRow, ServiceStore, VersionRow
from corral.frameworks.types import MasterInfo, Offer, TaskState, TaskStatus

log = structlog.get_logger(__name__)

#: how often a kill is sent again while the instance still runs
KILL_RETRY_S = 5.0
#: ends that are the agent's or the network's doing, not the service's
_LOST = frozenset({"LOST", "GONE", "GONE_BY_OPERATOR", "DROPPED", "UNKNOWN"})


class UnknownServiceError(KeyError):
    """No service has this name."""


class ServiceEngine(Scheduler):
    """Runs the services in ``store``; :meth:`deploy`, :meth:`scale` and
    :meth:`remove` change them, :meth:`tick` drives timers."""

    def __init__(
        self, store: ServiceStore, clock: Callable[[], float] = time.time, decline_refuse_s: float = 1.0
    ) -> None:
        self.store = store
        self.clock = clock
        self.decline_refuse_s = decline_refuse_s
        self.interest = OfferInterest()
        self.driver: SchedulerDriver | None = None
        self.services: dict[str, ServiceRow] = {}
        self.versions: dict[tuple[str, int], ServiceSpec] = {}
        self.raw: dict[tuple[str, int], dict[str, Any]] = {}
        self.instances: dict[str, InstanceRow] = {}
        #: instances to start per service, from the last plan
        self.wanted: dict[str, int] = {}
        #: why the last offer could not take a wanted instance, per service
        self.waiting: dict[str, str] = {}
        #: per service: the last reason each agent's offer was refused
        self.rejections: dict[str, dict[str, Reason]] = {}
        #: the cluster's agents, totals and free (set_agents; empty: not known)
        self.agents: list[Candidate] = []
        self._kills: dict[str, float] = {}
        #: bumped on every change, for watchers
        self.version = 0
        snap = store.load_services()
        self.framework_id = snap.framework_id
        for svc in snap.services:
            self.services[svc.name] = svc
        for v in snap.versions:
            raw = json.loads(v.spec)
            self.raw[(v.service, v.number)] = raw
            self.versions[(v.service, v.number)] = parse_service(raw)
        for inst in snap.instances:
            self.instances[inst.id] = inst
        for name in self.services:
            self._replan(name, self.clock())

    # -- queries ----------------------------------------------------------------

    def spec(self, svc: ServiceRow, version: int | None = None) -> ServiceSpec:
        return self.versions[(svc.name, svc.version if version is None else version)]

    def live(self, name: str) -> list[InstanceRow]:
        """Instances that may be running (not ended, UNREACHABLE ones included)."""
        return [i for i in self.instances.values() if i.service == name and not i.ended_at]

    def active(self, name: str) -> list[InstanceRow]:
        """Live instances the service counts on (not being stopped, not unreachable)."""
        return [i for i in self.live(name) if not i.killing]

    def is_healthy(self, inst: InstanceRow) -> bool:
        """Healthy by its check, or RUNNING when its version has none."""
        if inst.ended_at or inst.killing or inst.state != "RUNNING":
            return False
        if self.versions[(inst.service, inst.version)].health is None:
            return True
        return inst.healthy is True

    def healthy_count(self, name: str) -> int:
        return sum(self.is_healthy(i) for i in self.live(name))

    # -- the API ----------------------------------------------------------------

    def deploy(self, data: Mapping[str, Any], default_name: str = "service") -> dict[str, Any]:
        """Create a service, scale it (only ``instances`` changed) or roll out a
        new version. Raises ServiceSpecError naming the key."""
        spec = parse_service(data, default_name=default_name)
        raw = {**data, "name": spec.name}
        now = self.clock()
        svc = self.services.get(spec.name)
        if svc is not None and svc.state == "DELETING":
            raise ServiceSpecError(f"name: service {spec.name!r} is being removed; deploy it again once gone")
        with self.store.transaction():
            if svc is None:
                svc = ServiceRow(spec.name, 1, 0, spec.instances, "DEPLOYING", now, now)
                self.services[spec.name] = svc
                self._add_version(svc, 1, spec, raw, now)
                result = "created"
            elif same_deployment(raw, self.raw[(svc.name, svc.version)]):
                svc.instances = spec.instances
                result = "scaled"
            else:
                svc.version = max(n for (s, n) in self.versions if s == svc.name) + 1
                svc.instances, svc.state, svc.deploy_failures, svc.failures, svc.not_before = (
                    spec.instances,
                    "DEPLOYING",
                    0,
                    0,
                    0.0,
                )
                svc.message = f"rolling out v{svc.version}"
                self._add_version(svc, svc.version, spec, raw, now)
                result = "updated"
            svc.updated_at = now
            self.store.save(svc)
        log.info("service.deployed", service=svc.name, version=svc.version, result=result)
        self._replan(svc.name, now)
        return {"name": svc.name, "version": svc.version, "result": result}

    def _add_version(
        self, svc: ServiceRow, number: int, spec: ServiceSpec, raw: dict[str, Any], now: float
    ) -> None:
        row = VersionRow(f"{svc.name}.v{number}", svc.name, number, json.dumps(raw, sort_keys=True), now)
        self.store.save(row)
        self.versions[(svc.name, number)] = spec
        self.raw[(svc.name, number)] = raw

    def scale(self, name: str, instances: int) -> dict[str, Any]:
        """Keep ``instances`` instances of the service."""
        svc = self._get(name)
        if isinstance(instances, bool) or not isinstance(instances, int) or not 0 <= instances <= 1000:
            raise ServiceSpecError(f"instances: must be an integer from 0 to 1000, got {instances!r}")
        svc.instances = instances
        svc.updated_at = self.clock()
        self.store.save(svc)
        self._replan(name, svc.updated_at)
        return {"name": name, "instances": instances}

    def remove(self, name: str) -> dict[str, Any]:
        """Stop every instance, then forget the service."""
        svc = self._get(name)
        svc.state, svc.message, svc.instances = "DELETING", "stopping every instance", 0
        self.store.save(svc)
        self._replan(name, self.clock())
        return {"name": name, "result": "removing" if name in self.services else "removed"}

    def _get(self, name: str) -> ServiceRow:
        svc = self.services.get(name)
        if svc is None:
            raise UnknownServiceError(name)
        return svc

    def services_view(self) -> list[dict[str, Any]]:
        return [self._summary(s) for s in self.services.values()]

    def service_view(self, name: str) -> dict[str, Any]:
        svc = self._get(name)
        insts = sorted(
            (i for i in self.instances.values() if i.service == name), key=lambda i: i.seq, reverse=True
        )
        return {
            **self._summary(svc),
            "spec": self.raw[(name, svc.version)],
            "instances_detail": [
                {
                    "id": i.id,
                    "version": i.version,
                    "state": i.state if not i.ended_at else f"ENDED {i.state}",
                    "healthy": i.healthy,
                    "agent_id": i.agent_id,
                    "hostname": i.hostname,
                    "ports": i.ports,
                    "launched_at": i.launched_at,
                    "ended_at": i.ended_at,
                    "killing": i.killing,
                    "message": i.message,
                }
                for i in insts[:50]
            ],
        }

    def _summary(self, svc: ServiceRow) -> dict[str, Any]:
        live = self.live(svc.name)
        spec = self.spec(svc)
        return {
            "name": svc.name,
            "state": svc.state,
            "version": svc.version,
            "stable_version": svc.stable_version,
            "instances": svc.instances,
            "running": sum(i.state == "RUNNING" and not i.killing for i in live),
            "healthy": self.healthy_count(svc.name),
            "min_healthy": min_healthy(svc.instances, spec.update.max_unavailable),
            "live": len(self.active(svc.name)),
            "failures": svc.failures,
            "deploy_failures": svc.deploy_failures,
            "not_before": svc.not_before,
            "message": svc.message,
            "waiting": self.waiting.get(svc.name, "") if self.wanted.get(svc.name) else "",
            "unschedulable": self._never_fits(svc.name),
            "waiting_count": self.wanted.get(svc.name, 0),
        }

    # -- placement verdicts and explanations --------------------------------------

    def set_agents(self, agents: list[Candidate]) -> None:
        """The cluster's agents (``ListAgents``, see corral.frameworks.agents)."""
        if agents != self.agents:
            self.agents = agents
            self.version += 1

    def _never_fits(self, name: str) -> str:
        """Why no agent can ever hold an instance wanted now ("" if one can, or
        no agent is known). A service keeps waiting: agents may join."""
        svc = self.services.get(name)
        if svc is None or not self.wanted.get(name) or not self.agents:
            return ""
        verdict = never_fits(self.ask(self.spec(svc)), self.agents)
        return str(verdict) if verdict is not None else ""

    def explain(self) -> list[dict[str, Any]]:
        """Per service with instances to start: what one asks, which checker
        rejected which agents, and the smallest change that would place it."""
        out = []
        for name, wanted in self.wanted.items():
            svc = self.services.get(name)
            if svc is None or wanted <= 0:
                continue
            spec = self.spec(svc)
            siblings = self._siblings(svc, spec, None)
            view = pending_view(
                self.ask(spec),
                self.agents,
                siblings,
                self.rejections.get(name, {}),
                service=name,
                wanted=wanted,
            )
            out.append(view)
        return out

    # -- planning -----------------------------------------------------------------

    def _replan(self, name: str, now: float) -> None:
        """Decide what the service needs (starts go to offers, stops go out now)."""
        svc = self.services.get(name)
        if svc is None:
            return
        spec = self.spec(svc)
        live = self.live(name)
        with self.store.transaction():
            for inst in live:
                # A new instance that would not become healthy in time counts as failed.
                deadline = self.versions[(name, inst.version)].update.healthy_deadline_s
                if (
                    inst.version == svc.version
                    and not inst.killing
                    and not self.is_healthy(inst)
                    and inst.healthy_at == 0
                    and now - inst.launched_at > deadline
                ):
                    self._stop(inst, f"not healthy within {deadline:g}s")
                    self._failed(svc, inst, now)
            candidates = [Live(i.id, i.version, self.is_healthy(i), i.seq) for i in self.active(name)]
            step = plan(
                svc.version, svc.instances, spec.update.max_unavailable, spec.update.max_surge, candidates
            )
            for inst_id in step.kill:
                self._stop(self.instances[inst_id], "stopped by the service")
            self.wanted[name] = step.launch if svc.state != "DELETING" else 0
            self._advance(svc, now)
        self._send_kills(now)
        self.version += 1
        if self.driver is not None:
            self.interest.update(self.driver, self._wants_offers(now))

    def _advance(self, svc: ServiceRow, now: float) -> None:
        """Close a deployment, a rollback or a removal once it is done (an
        instance on an unreachable agent holds none of them up)."""
        live = [i for i in self.live(svc.name) if i.state != "UNREACHABLE"]
        if svc.state == "DELETING":
            if not live:
                self.store.delete_service(svc.name)
                del self.services[svc.name]
                for key in [k for k in self.versions if k[0] == svc.name]:
                    del self.versions[key]
                    del self.raw[key]
                for inst_id in [i.id for i in self.instances.values() if i.service == svc.name]:
                    del self.instances[inst_id]
                self.wanted.pop(svc.name, None)
                log.info("service.removed", service=svc.name)
            return
        settled = all(i.version == svc.version for i in live)
        healthy = sum(self.is_healthy(i) for i in live if i.version == svc.version)
        if svc.state in ("DEPLOYING", "ROLLING_BACK") and settled and healthy >= svc.instances:
            done = "rolled back to" if svc.state == "ROLLING_BACK" else "deployed"
            svc.state, svc.stable_version, svc.deploy_failures = "RUNNING", svc.version, 0
            svc.message = f"{done} v{svc.version}"
            svc.updated_at = now
            self.store.save(svc)
            log.info("service.settled", service=svc.name, version=svc.version, message=svc.message)

    def _failed(self, svc: ServiceRow, inst: InstanceRow, now: float) -> None:
        """Count a failure of ``inst``: backoff, and maybe a rollback."""
        svc.failures += 1
        svc.not_before = now + self.spec(svc).backoff(svc.failures)
        if inst.version == svc.version and svc.state == "DEPLOYING":
            svc.deploy_failures += 1
            limit = self.spec(svc).update.rollback_after_failures
            if svc.deploy_failures >= limit and svc.stable_version and svc.stable_version != svc.version:
                bad = svc.version
                svc.version, svc.state = svc.stable_version, "ROLLING_BACK"
                svc.failures, svc.not_before = 0, 0.0
                svc.message = f"v{bad} failed {svc.deploy_failures} times ({inst.message}); rolling back"
                log.warning("service.rollback", service=svc.name, bad=bad, to=svc.version, why=inst.message)
                self.store.save(svc)
                return
        svc.message = f"instance {inst.id} failed: {inst.message}"
        self.store.save(svc)

    def _stop(self, inst: InstanceRow, why: str) -> None:
        inst.killing = True
        inst.message = why
        self.store.save(inst)

    def _wants_offers(self, now: float) -> bool:
        return any(
            n > 0 and self.services[name].not_before <= now
            for name, n in self.wanted.items()
            if name in self.services
        )

    # -- scheduler callbacks -------------------------------------------------------

    async def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        self.driver = driver
        if framework_id != self.framework_id:
            self.framework_id = framework_id
            self.store.set_framework_id(framework_id)
        self.interest.reset()
        live = [(i.id, i.agent_id) for i in self.instances.values() if not i.ended_at]
        if live:
            driver.reconcile(live)
        self._kills.clear()
        self.interest.update(driver, self._wants_offers(self.clock()))

    def forget_framework(self) -> None:
        """The master no longer knows our framework id: its tasks were killed."""
        now = self.clock()
        with self.store.transaction():
            self.framework_id = ""
            self.store.set_framework_id("")
            for inst in self.instances.values():
                if not inst.ended_at:
                    inst.state, inst.ended_at, inst.message = "LOST", now, "the framework was removed"
                    self.store.save(inst)
        for name in list(self.services):
            self._replan(name, now)

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        now = self.clock()
        first = next((n for n, w in self.wanted.items() if w > 0 and n in self.services), None)
        if first is not None and len(offers) > 1:
            # Spread: agents without an instance of it, then the emptier ones, first.
            svc = self.services[first]
            spec = self.spec(svc)
            offers = order_offers(self.ask(spec), offers, spread, self._siblings(svc, spec, None))
        for offer in offers:
            launched = self._place(offer, now)
            if launched:
                driver.launch(offer, launched, refuse_s=0.0)
            else:
                driver.decline(offer, refuse_s=self.decline_refuse_s)
        self.version += 1
        self.interest.update(driver, self._wants_offers(now))

    def _place(self, offer: Offer, now: float) -> list[Any]:
        """Start what fits this offer: resources, ports, constraints, spreading."""
        left = offer.resources
        tasks = []
        for name, wanted in list(self.wanted.items()):
            svc = self.services.get(name)
            if svc is None or wanted <= 0 or svc.not_before > now:
                continue
            count = wanted
            spec = self.spec(svc)
            ask = self.ask(spec)
            while count > 0:
                cand = Candidate(offer.agent_id, offer.hostname, left, offer.attributes)
                refused = feasible(ask, cand, self._siblings(svc, spec, offer))
                got = need(ask, cand) if refused is None else None
                if got is None:
                    if refused is not None:
                        self.rejections.setdefault(name, {})[offer.agent_id] = refused
                    self.waiting[name] = str(refused) if refused else f"{offer.hostname}: no place"
                    break
                need_res, ports = got
                self.rejections.get(name, {}).pop(offer.agent_id, None)
                self.waiting.pop(name, None)
                svc.next_seq += 1
                inst = InstanceRow(
                    id=f"{name}.{svc.next_seq}.v{svc.version}",
                    service=name,
                    version=svc.version,
                    seq=svc.next_seq,
                    agent_id=offer.agent_id,
                    hostname=offer.hostname,
                    state="STAGING",
                    launched_at=now,
                    attributes=json.dumps(dict(offer.attributes), sort_keys=True),
                    ports=ports.format() if ports else "",
                )
                with self.store.transaction():
                    self.store.save(svc)
                    self.store.save(inst)
                self.instances[inst.id] = inst
                tasks.append(spec.task(inst.id, svc.version, ports))
                left = left - need_res
                count -= 1
            self.wanted[name] = count
        return tasks

    @staticmethod
    def ask(spec: ServiceSpec) -> Ask:
        """What one instance needs of an agent."""
        return Ask(
            spec.resources,
            spec.constraints,
            spec.ports,
            spec.unique_host,
            spec.unique_attributes,
            image=spec.image,
        )

    def _siblings(self, svc: ServiceRow, spec: ServiceSpec, offer: Offer | None) -> Siblings:
        """Where the service's other instances run (an unreachable one counts
        only on its own agent: it may be gone)."""
        if not spec.unique_host and not spec.unique_attributes:
            return NO_SIBLINGS
        here = offer.agent_id if offer is not None else None
        others = [i for i in self.live(svc.name) if i.state != "UNREACHABLE" or i.agent_id == here]
        values: dict[str, set[str]] = {a: set() for a in spec.unique_attributes}
        for i in others:
            attrs = json.loads(i.attributes)
            for a in spec.unique_attributes:
                if a in attrs:
                    values[a].add(attrs[a])
        return Siblings(frozenset(i.agent_id for i in others), {a: frozenset(v) for a, v in values.items()})

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        inst = self.instances.get(status.task_id)
        if inst is None or inst.ended_at:
            return  # not ours, or a duplicate of an end already recorded
        now = self.clock()
        svc = self.services[inst.service]
        with self.store.transaction():
            if status.agent_id:
                inst.agent_id = status.agent_id
            if status.healthy is not None and status.healthy != inst.healthy:
                inst.healthy = status.healthy
                if status.healthy:
                    inst.healthy_at = inst.healthy_at or now
                    svc.failures, svc.not_before = 0, 0.0
                    self.store.save(svc)
            if status.state.is_terminal:
                inst.state, inst.ended_at = status.state.name, now
                reason = f"{status.reason}: " if status.reason else ""
                inst.message = f"{reason}{status.message}"[:300]
                if not inst.killing and status.state.name not in _LOST:
                    self._failed(svc, inst, now)
            elif status.state is TaskState.UNREACHABLE:
                # Replaced at once; should its agent come back, it is stopped then.
                inst.state = status.state.name
                self._stop(inst, f"unreachable: {status.message}"[:300])
            else:
                inst.state = status.state.name
                unchecked = self.versions[(svc.name, inst.version)].health is None
                if inst.state == "RUNNING" and unchecked and not inst.healthy_at:
                    inst.healthy_at = now
                    svc.failures, svc.not_before = 0, 0.0
                    self.store.save(svc)
            self.store.save(inst)
        self._replan(svc.name, now)

    # -- timers -------------------------------------------------------------------

    def tick(self) -> None:
        """Re-plan every service (deadlines, backoffs) and resend kills.
        Call every fraction of a second while connected."""
        now = self.clock()
        for name in list(self.services):
            self._replan(name, now)
        if self.driver is not None and self.driver.connected.is_set():
            self.interest.update(self.driver, self._wants_offers(now))

    def _send_kills(self, now: float) -> None:
        driver = self.driver
        if driver is None or not driver.connected.is_set():
            return
        for inst in self.instances.values():
            if not inst.killing or inst.ended_at:
                continue
            if now - self._kills.get(inst.id, -KILL_RETRY_S) < KILL_RETRY_S:
                continue
            try:
                driver.kill(inst.id, inst.agent_id)
            except NotConnectedError:
                return
            self._kills[inst.id] = now
