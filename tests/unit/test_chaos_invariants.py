"""The chaos invariants on synthetic observations: a clean run passes every
check, and each kind of violation is caught by its own check (and only it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from corral.chaos.invariants import Check, check_all
from corral.chaos.observer import AgentObs, Sample, TaskObs
from corral.chaos.workload import FrameworkViews

TOTAL = "cpus:1;mem:1024;disk:2000;ports:[31000-31100]"
A1 = AgentObs("S1", "c-agent1", True, TOTAL, "cpus:0.4;mem:32")
A2 = AgentObs("S2", "c-agent2", True, TOTAL, "cpus:0.2;mem:16")
RUNNING = (
    TaskObs("fw-svc", "svc.1.v1", "S1", "RUNNING", "cpus:0.2;mem:16"),
    TaskObs("fw-svc", "svc.2.v1", "S2", "RUNNING", "cpus:0.2;mem:16"),
)
DONE = TaskObs("fw-batch", "job.work.0.a1", "S1", "FINISHED", "cpus:0.2;mem:16")
RUN_BATCH = dataclasses.replace(DONE, state="RUNNING")


def _sample(t: float, *, tasks: tuple[TaskObs, ...], **kw: Any) -> Sample:
    running = [x for x in tasks if x.state == "RUNNING"]
    host = {"S1": "c-agent1", "S2": "c-agent2"}
    defaults: dict[str, Any] = {
        "leader": "master1",
        "agents": (A1, A2),
        "tasks": tasks,
        "reported": tuple(sorted((x.agent_id, x.task_id) for x in running)),
        "live": tuple(sorted((host[x.agent_id], x.task_id) for x in running)),
    }
    return Sample(t, **{**defaults, **kw})


def _views(**kw: Any) -> FrameworkViews:
    job = {
        "id": "job",
        "state": "SUCCEEDED",
        "tasks": [
            {
                "id": "job.work.0",
                "state": "FINISHED",
                "history": [{"task_id": "job.work.0.a1", "state": "FINISHED"}],
            }
        ],
    }
    service = {
        "name": "svc",
        "instances": 2,
        "running": 2,
        "instances_detail": [{"id": "svc.1.v1", "state": "RUNNING"}, {"id": "svc.2.v1", "state": "RUNNING"}],
    }
    views = FrameworkViews(
        jobs=[job], service=service, framework_ids={"batch": "fw-batch", "service": "fw-svc"}
    )
    return dataclasses.replace(views, **kw)


def _clean() -> tuple[list[Sample], Sample, FrameworkViews]:
    samples = [
        _sample(1.0, tasks=(*RUNNING, RUN_BATCH)),
        _sample(2.0, tasks=(*RUNNING, DONE)),
    ]
    final = _sample(30.0, tasks=(*RUNNING, DONE))
    return samples, final, _views()


def _failed(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks if not c.ok}


def test_a_clean_run_holds_every_invariant() -> None:
    samples, final, views = _clean()
    checks = check_all(samples, final, views)
    assert len(checks) == 7
    assert _failed(checks) == {}
    assert all(c.detail for c in checks)


def _task_left_pending(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    job = {
        **v.jobs[0],
        "tasks": [*v.jobs[0]["tasks"], {"id": "job.work.1", "state": "PENDING", "history": []}],
    }
    return s, f, dataclasses.replace(v, jobs=[job])


def _service_short(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    return s, f, dataclasses.replace(v, service={**v.service, "running": 1})


def _twice(s: list[Sample], f: Sample, v: FrameworkViews) -> tuple[list[Sample], Sample, FrameworkViews]:
    both = dataclasses.replace(s[0], live=(*s[0].live, ("c-agent2", "svc.1.v1")))
    return [both, *s[1:]], f, v


def _twice_reported(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    reported = s[0].reported or ()
    both = dataclasses.replace(s[0], reported=(*reported, ("S2", "svc.1.v1")))
    return [both, *s[1:]], f, v


def _overallocated(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    over = dataclasses.replace(A1, allocated="cpus:1.2;mem:32")
    return [dataclasses.replace(s[0], agents=(over, A2)), *s[1:]], f, v


def _overrun(s: list[Sample], f: Sample, v: FrameworkViews) -> tuple[list[Sample], Sample, FrameworkViews]:
    # The registry's allocation looks fine, but the processes really running on
    # agent1 (two big tasks the leader once listed) need more than it has.
    big = (
        TaskObs("fw-batch", "big1", "S1", "FINISHED", "cpus:0.7"),
        TaskObs("fw-batch", "big2", "S1", "FINISHED", "cpus:0.7"),
    )
    first = dataclasses.replace(
        s[0], tasks=(*s[0].tasks, *big), live=(*s[0].live, ("c-agent1", "big1"), ("c-agent1", "big2"))
    )
    return [first, *s[1:]], f, v


def _ghost(s: list[Sample], f: Sample, v: FrameworkViews) -> tuple[list[Sample], Sample, FrameworkViews]:
    # The registry says a task runs on agent2; nothing runs it and agent2 does not report it.
    extra = TaskObs("fw-batch", "ghost", "S2", "RUNNING", "cpus:0.1")
    return s, dataclasses.replace(f, tasks=(*f.tasks, extra)), v


def _unregistered(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    # A process runs a task the registry does not have there (e.g. left behind by a restarted agent).
    return s, dataclasses.replace(f, live=(*f.live, ("c-agent1", "orphan"))), v


def _missed_terminal(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    job = {
        **v.jobs[0],
        "tasks": [{**v.jobs[0]["tasks"][0], "history": [{"task_id": "job.work.0.a1", "state": "RUNNING"}]}],
    }
    return s, f, dataclasses.replace(v, jobs=[job])


def _missed_lost(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    # The framework still counts an instance as running that nothing runs any more.
    detail = [*v.service["instances_detail"], {"id": "svc.3.v1", "state": "RUNNING"}]
    return s, f, dataclasses.replace(v, service={**v.service, "instances_detail": detail})


def _crashed(s: list[Sample], f: Sample, v: FrameworkViews) -> tuple[list[Sample], Sample, FrameworkViews]:
    return [dataclasses.replace(s[0], dead=("master2",)), *s[1:]], f, v


def _killed_is_fine(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    return [dataclasses.replace(s[0], dead=("master2",), faulted=("master2",)), *s[1:]], f, v


def _no_leader_at_end(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    return s, Sample(30.0, None, errors=("no master leads",)), v


def _agent_disconnected(
    s: list[Sample], f: Sample, v: FrameworkViews
) -> tuple[list[Sample], Sample, FrameworkViews]:
    return s, dataclasses.replace(f, agents=(A1, dataclasses.replace(A2, connected=False))), v


Mutation = Callable[[list[Sample], Sample, FrameworkViews], tuple[list[Sample], Sample, FrameworkViews]]


@pytest.mark.parametrize(
    ("mutate", "caught_by"),
    [
        (_task_left_pending, {"every submitted task terminal or running"}),
        (_service_short, {"every submitted task terminal or running"}),
        (_twice, {"no task id running on two agents at once"}),
        (_twice_reported, {"no task id running on two agents at once"}),
        (_overallocated, {"no agent over-committed"}),
        (_overrun, {"no agent over-committed"}),
        (_ghost, {"registry agrees with the agents"}),
        (_unregistered, {"registry agrees with the agents"}),
        (_missed_terminal, {"the framework saw every terminal update"}),
        (_missed_lost, {"the framework saw every terminal update"}),
        (_crashed, {"no node died except by a fault"}),
        (_killed_is_fine, set()),
        (
            _no_leader_at_end,
            {
                "registry agrees with the agents",
                "cluster recovered after the faults",
                "the framework saw every terminal update",
            },
        ),
        (_agent_disconnected, {"registry agrees with the agents", "cluster recovered after the faults"}),
    ],
)
def test_each_violation_is_caught(mutate: Mutation, caught_by: set[str]) -> None:
    samples, final, views = mutate(*_clean())
    failed = _failed(check_all(samples, final, views))
    assert set(failed) == caught_by
    for c in failed.values():
        assert c.violations
        assert c.detail.startswith(f"{len(c.violations)} violation(s)")
