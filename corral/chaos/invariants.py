"""Invariants over a chaos run's samples and the frameworks' final account.

Pure: plain data in, :class:`Check` rows out (the report's table). Samples
taken while faults are in force may legitimately disagree for a moment (an
update in flight); the checks that compare views use the final samples,
taken after every fault was healed and the cluster settled; the ones that
must hold at every moment (no task twice, no over-commitment, no node dying
by itself) look at every sample.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corral.chaos.observer import Sample
from corral.chaos.workload import FrameworkViews
from corral.resources import ResourceError, Resources

#: task states after which nothing runs (TaskState names)
TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED", "ERROR", "LOST", "DROPPED", "GONE", "GONE_BY_OPERATOR"})
#: a batch task's own states that are final
TASK_FINAL = frozenset({"FINISHED", "FAILED", "CANCELLED", "SKIPPED"})
ACTIVE = frozenset({"STAGING", "STARTING", "RUNNING", "KILLING"})
_MAX_LISTED = 5


@dataclass(frozen=True)
class Check:
    """One row: an invariant, whether it held, and what was seen."""

    name: str
    ok: bool
    detail: str
    violations: tuple[str, ...] = ()


def _listed(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_MAX_LISTED])
    return shown + (f"; and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


def _row(name: str, violations: list[str], ok_detail: str) -> Check:
    if violations:
        return Check(name, False, f"{len(violations)} violation(s): {_listed(violations)}", tuple(violations))
    return Check(name, True, ok_detail)


def _res(text: str) -> Resources:
    try:
        return Resources.parse(text) if text else Resources()
    except ResourceError:
        return Resources()


# -- every submitted task terminal or running ----------------------------------------


def tasks_terminal_or_running(views: FrameworkViews) -> Check:
    """Every task of every submitted job ended; the service runs all its instances."""
    bad: list[str] = []
    counts: dict[str, int] = defaultdict(int)
    for job in views.jobs:
        if job.get("error"):
            bad.append(f"job {job['id']}: {job['error']}")
            continue
        for t in job.get("tasks", []):
            counts[t["state"]] += 1
            if t["state"] not in TASK_FINAL:
                bad.append(f"{t['id']} is {t['state']}")
    svc = views.service
    if svc.get("error") or not svc:
        bad.append(f"service: {svc.get('error', 'not deployed')}")
    elif svc.get("running", 0) < svc.get("instances", 0):
        bad.append(f"service {svc['name']}: {svc.get('running', 0)}/{svc['instances']} running")
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    total = sum(counts.values())
    running = f"{svc.get('running', 0)}/{svc.get('instances', 0)}" if svc else "0/0"
    return _row(
        "every submitted task terminal or running",
        bad,
        f"{total} batch tasks of {len(views.jobs)} jobs ({states or 'none'}); service {running} running",
    )


# -- no task on two agents at once ----------------------------------------------------------


def no_task_on_two_agents(samples: Sequence[Sample]) -> Check:
    """At no sample does one task id have a live process on two agents, or is
    it reported running by two agents."""
    bad: list[str] = []
    seen: set[str] = set()
    for s in samples:
        for source, pairs in (("processes", s.live), ("agents' reports", s.reported or ())):
            where: dict[str, set[str]] = defaultdict(set)
            for agent, task in pairs:
                where[task].add(agent)
                seen.add(task)
            for task, agents in sorted(where.items()):
                if len(agents) > 1:
                    bad.append(f"t={s.t:.1f}s {task} on {', '.join(sorted(agents))} ({source})")
    return _row(
        "no task id running on two agents at once",
        bad,
        f"{len(seen)} task ids seen running over {len(samples)} samples",
    )


# -- no agent over-committed -----------------------------------------------------------------


def _task_resources(samples: Iterable[Sample]) -> dict[str, Resources]:
    out: dict[str, Resources] = {}
    for s in samples:
        for t in s.tasks:
            if t.resources and t.task_id not in out:
                out[t.task_id] = _res(t.resources)
    return out


def no_agent_overcommitted(samples: Sequence[Sample]) -> Check:
    """At every sample, each agent's allocation (as the leader accounts it) and
    the resources of the tasks really running on it fit in its total."""
    bad: list[str] = []
    resources = _task_resources(samples)
    checked = 0
    for s in samples:
        live: dict[str, list[str]] = defaultdict(list)
        for host, task in s.live:
            live[host].append(task)
        for a in s.agents:
            total = _res(a.total)
            checked += 1
            if not total.contains(_res(a.allocated)):
                bad.append(f"t={s.t:.1f}s {a.hostname}: allocated {a.allocated} > total {a.total}")
            running = Resources()
            for task in live.get(a.hostname, []):
                running = running + resources.get(task, Resources())
            if not total.contains(running):
                bad.append(f"t={s.t:.1f}s {a.hostname}: running tasks use {running.format()} > {a.total}")
    return _row("no agent over-committed", bad, f"{checked} agent observations, allocated <= total in all")


# -- the registry agrees with the agents ---------------------------------------------------------


def registry_agrees(final: Sample) -> Check:
    """After the faults: each agent's tasks by the leader's registry, by the
    agent's own report and by its live processes are the same."""
    bad: list[str] = []
    if final.leader is None or final.reported is None:
        return _row("registry agrees with the agents", [f"no answer from a leader: {final.errors}"], "")
    host_of = {a.agent_id: a.hostname for a in final.agents}
    registry: dict[str, set[str]] = defaultdict(set)
    for t in final.tasks:
        if t.state in ACTIVE:
            registry[host_of.get(t.agent_id, t.agent_id)].add(t.task_id)
    reported: dict[str, set[str]] = defaultdict(set)
    for agent_id, task in final.reported:
        reported[host_of.get(agent_id, agent_id)].add(task)
    live: dict[str, set[str]] = defaultdict(set)
    for host, task in final.live:
        live[host].add(task)
    for a in final.agents:
        if not a.connected:
            bad.append(f"{a.hostname} not connected")
    for host in sorted(set(registry) | set(reported) | set(live)):
        r, rep, lv = registry[host], reported[host], live[host]
        if host not in {a.hostname for a in final.agents}:
            bad.append(f"{host}: runs {sorted(lv | rep)} but is not registered")
            continue
        for task in sorted(r - lv):
            bad.append(f"{host}: registry has {task} running, no process runs it")
        for task in sorted(lv - r):
            bad.append(f"{host}: {task} runs, the registry does not have it running there")
        for task in sorted(rep ^ lv):
            if task in rep:
                bad.append(f"{host}: {task} reported running, no process runs it")
            else:
                bad.append(f"{host}: {task} runs, the agent does not report it")
    for problem in final.unanswered:
        bad.append(f"agent did not answer: {problem}")
    running = sum(len(v) for v in live.values())
    return _row(
        "registry agrees with the agents",
        bad,
        f"{len(final.agents)} agents, {running} tasks running, registry = agents' reports = processes",
    )


# -- the framework saw every terminal update ----------------------------------------------------


def framework_states(views: FrameworkViews) -> dict[str, str]:
    """task id -> the state its framework last recorded (batch attempts, service instances)."""
    out: dict[str, str] = {}
    for job in views.jobs:
        for t in job.get("tasks", []):
            for a in t.get("history", []):
                out[a["task_id"]] = a["state"]
    for i in views.service.get("instances_detail", []):
        out[i["id"]] = str(i["state"]).removeprefix("ENDED ")
    return out


def framework_saw_terminal(samples: Sequence[Sample], views: FrameworkViews, final: Sample) -> Check:
    """Every task the leader ever called terminal is terminal for its framework,
    and every task its framework still thinks active runs at the end."""
    ours = {fid for fid in views.framework_ids.values() if fid}
    known = framework_states(views)
    ended: dict[str, str] = {}
    for s in samples:
        for t in s.tasks:
            if t.framework_id in ours and t.state in TERMINAL:
                ended.setdefault(t.task_id, t.state)
    bad: list[str] = []
    for task, state in sorted(ended.items()):
        fw = known.get(task)
        if fw is not None and fw not in TERMINAL:
            bad.append(f"{task}: {state} at the master, {fw} for its framework")
    live = {task for _host, task in final.live}
    for task, fw in sorted(known.items()):
        if fw in ACTIVE and task not in live:
            bad.append(f"{task}: {fw} for its framework, but nothing runs it")
    return _row(
        "the framework saw every terminal update",
        bad,
        f"{len(ended)} terminal tasks at the master, each terminal for its framework",
    )


# -- nodes ---------------------------------------------------------------------------------------


def no_node_died_by_itself(samples: Sequence[Sample]) -> Check:
    """A node's process is gone only while a fault that killed it is in force."""
    bad: list[str] = []
    for s in samples:
        for node in s.dead:
            if node not in s.faulted:
                bad.append(f"t={s.t:.1f}s {node} gone")
    first: dict[str, str] = {}
    for b in bad:  # one line per node: where it was first seen gone
        first.setdefault(b.split()[1], b)
    return _row("no node died except by a fault", list(first.values()), "every node alive unless killed")


def cluster_recovered(final: Sample) -> Check:
    """After the faults were healed: one leader, every agent connected, every node up."""
    bad = []
    if final.leader is None:
        bad.append("no master leads")
    bad += [f"{a.hostname} disconnected" for a in final.agents if not a.connected]
    bad += [f"{n} gone" for n in final.dead]
    return _row("cluster recovered after the faults", bad, f"{final.leader} leads, every agent connected")


def check_all(samples: Sequence[Sample], final: Sample, views: FrameworkViews) -> list[Check]:
    """Every invariant, in the report's order."""
    everything = [*samples, final]
    return [
        tasks_terminal_or_running(views),
        no_task_on_two_agents(everything),
        no_agent_overcommitted(everything),
        registry_agrees(final),
        framework_saw_terminal(everything, views, final),
        no_node_died_by_itself(everything),
        cluster_recovered(final),
    ]
