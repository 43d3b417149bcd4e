"""The batch engine: a scheduler whose every job, task and attempt lives in a
:class:`~corral.frameworks.batch.store.Store`.

A task is one index of a task group; each try of it is an *attempt* with its
own task id at the master (``JOB.GROUP.INDEX.aN``), so a retry never reuses an
id and every try keeps its agent, exit code and message. Task states:

    WAITING -> PENDING -> STAGING -> RUNNING -> FINISHED
       |          ^  (failed, retries left: after a backoff)  |
       v          +-------------------------------------------+-> FAILED (retries exhausted)
    SKIPPED (a dependency failed)                  CANCELLED (the job was cancelled)

An attempt is written before its launch is sent and its end is written
before the update is acknowledged, so after a crash the engine knows every
attempt that may run; on subscribing it reconciles them with the master, and
one the master never heard of (UNKNOWN: the launch was lost with the crash)
goes back to PENDING without counting as a failure. So does an attempt whose
agent was lost (LOST, GONE, DROPPED: not the task's fault), up to
:data:`MAX_RESCHEDULES` times per task. A finished task never runs again.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import structlog

from corral.errors import NotConnectedError
from corral.frameworks.batch import views
from corral.frameworks.batch.cron import Cron, parse_cron
from corral.frameworks.batch.model import FINAL, JOB_FINAL, JobModel
from corral.frameworks.batch.spec import JobSpec, JobSpecError, parse_job
from corral.frameworks.batch.store import AttemptRow, JobRow, PeriodicRow, Store, TaskRow, dumps
from corral.frameworks.batch.views import JobStateError, UnknownJobError
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.fit_change import pending_view
from corral.frameworks.interest import OfferInterest
from corral.frameworks.placement import (
    NO_SIBLINGS,
    Ask,
    Candidate,
    NeverFits,
    Reason,
    Siblings,
    binpack,
    feasible,
    never_fits,
    order_offers,
)
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.types import MasterInfo, Offer, TaskState, TaskStatus

log = structlog.get_logger(__name__)

#: how often a kill (timeout, cancel) is sent again while the task still runs
KILL_RETRY_S = 5.0
#: how often attempts last seen UNREACHABLE are reconciled by id. A master that
#: failed over answers UNREACHABLE for a task it never heard of while its agent
#: is away; if the agent comes back without it (the launch was lost in the
#: partition) nothing else ever says so, and the task would wait for ever
#: (found by `corral sim --seeds 203`). Mesos asks frameworks to reconcile
#: periodically for the same reason.
RECONCILE_UNREACHABLE_S = 60.0
#: ends that say the task's agent (or the offer it was launched on) was lost, not
#: that the task failed: tried again without using a retry, as Mesos, Aurora and
#: Nomad reschedule off a lost node (UNREACHABLE is not an end: it becomes GONE,
#: or LOST for a framework that is not partition-aware, or the task comes back)
INFRASTRUCTURE_ENDS = frozenset({"LOST", "GONE", "GONE_BY_OPERATOR", "DROPPED"})
#: but at most this many times per task, so a task that keeps losing its
#: agent (or takes agents down with it) cannot loop forever
MAX_RESCHEDULES = 10


class BatchEngine(JobModel, Scheduler):
    """Runs the jobs in ``store``; :meth:`submit` adds one, :meth:`tick` drives timers."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        decline_refuse_s: float = 1.0,
        ids: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        super().__init__(store, clock)
        #: hex digits for new job ids; the simulation (corral.sim) passes seeded ones
        self.new_id = ids
        self.decline_refuse_s = decline_refuse_s
        self.interest = OfferInterest()
        self.driver: SchedulerDriver | None = None
        self.periodic: dict[str, PeriodicRow] = {}
        #: each readable periodic job's concurrency policy (spec.CONCURRENCY_POLICIES)
        self.periodic_policy: dict[str, str] = {}
        self._kills: dict[str, float] = {}
        self._reconciled_at = 0.0
        self._asks: dict[tuple[str, str], Ask] = {}
        #: per (job, group): the last reason each agent's offer was refused
        self.rejections: dict[tuple[str, str], dict[str, Reason]] = {}
        #: the cluster's agents, totals and free (set_agents; empty: not known)
        self.agents: list[Candidate] = []
        #: pending (job, group)s that no agent's total can hold
        self.unschedulable: dict[tuple[str, str], NeverFits] = {}
        snap = store.load()
        self.framework_id = snap.framework_id
        self.load(snap)
        for p in snap.periodic:
            self.periodic[p.id] = p
            if p.state == "ACTIVE":
                self._periodic_spec(p)  # a bad one is marked FAILED now, not when it is due

    # -- the API ----------------------------------------------------------------

    def submit(self, data: Mapping[str, Any], default_name: str = "job") -> dict[str, str]:
        """Validate and store a job (or, with ``schedule``, a periodic job).
        Raises JobSpecError naming the key."""
        spec = parse_job(data, default_name=default_name)
        raw = {**data, "name": spec.name}
        if spec.schedule:
            cron = parse_cron(spec.schedule)
            now = self.clock()
            row = PeriodicRow(spec.name, spec.schedule, dumps(raw), cron.next_after_ts(now), created_at=now)
            self.store.save(row)
            self.periodic[row.id] = row
            self.periodic_policy[row.id] = spec.concurrency_policy
            self.version += 1
            log.info("batch.periodic_added", periodic_id=row.id, schedule=row.schedule)
            return {"periodic_id": row.id, "next_run": str(row.next_run)}
        return {"job_id": self._start_job(spec, raw)}

    def _start_job(
        self, spec: JobSpec, raw: Mapping[str, Any], periodic: str = "", scheduled_at: float = 0.0
    ) -> str:
        after = self._resolve(spec)
        job_id = f"{spec.name}-{self.new_id()[:6]}"
        stored = {k: v for k, v in raw.items() if k not in ("schedule", "concurrency_policy")}
        if after:
            stored["after"] = [str(d) for d in after]
        now = self.clock()
        job = JobRow(
            job_id,
            spec.name,
            dumps(stored),
            "RUNNING",
            self.clock(),
            periodic=periodic,
            scheduled_at=scheduled_at,
        )
        with self.store.transaction():
            self.store.save(job)
            self.jobs[job_id] = job
            self.specs[job_id] = parse_job(stored)
            self.job_tasks[job_id] = []
            self._index_dependencies(job_id)
            for group in spec.groups:
                state = "WAITING" if group.policy.after or after else "PENDING"
                for i in range(group.count):
                    task = TaskRow(f"{job_id}.{group.name}.{i}", job_id, group.name, i, state, queued_at=now)
                    self.store.save(task)
                    self._add_task(task)
            if after:
                self._advance(job)  # a dependency may be met (or never be) already
        self.version += 1
        log.info("batch.job_submitted", job_id=job_id, tasks=len(self.job_tasks[job_id]))
        self._judge()
        if self.driver is not None:
            self.interest.update(self.driver, self._wants_offers(self.clock()))
        return job_id

    def cancel(self, job_id: str) -> str:
        """Cancel a running job (its tasks are killed) or remove a periodic job."""
        if job_id in self.periodic:
            self.store.delete_periodic(job_id)
            del self.periodic[job_id]
            self.periodic_policy.pop(job_id, None)
            self.version += 1
            return "periodic job removed"
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return self._cancel_job(job)

    def hold(self, job_id: str) -> str:
        """Keep the job's pending tasks from launching (``scontrol hold``);
        its running tasks go on."""
        job = self._job(job_id)
        if job.state in JOB_FINAL:
            raise JobStateError(f"job {job_id} already {job.state.lower()}: nothing to hold")
        if job.held:
            return "already held"
        job.held = True
        self.store.save(job)
        self._changed()
        return "held: no more of its tasks launch until it is released"

    def release(self, job_id: str) -> str:
        """Let a held job's tasks launch again."""
        job = self._job(job_id)
        if not job.held:
            return "not held"
        job.held = False
        self.store.save(job)
        self._changed()
        return "released"

    def requeue(self, job_id: str, failed_only: bool = False) -> str:
        """Run an ended job again (``scontrol requeue``): every task, or with
        ``failed_only`` those that failed, were cancelled or skipped. Each
        gets its retries back; earlier attempts stay in its history."""
        job = self._job(job_id)
        if job.state not in JOB_FINAL:
            raise JobStateError(f"job {job_id} is still running: wait for it to end or cancel it first")
        again = FINAL - {"FINISHED"} if failed_only else FINAL
        spec = self.specs[job_id]
        tasks = [self.tasks[t] for t in self.job_tasks[job_id] if self.tasks[t].state in again]
        if not tasks:
            raise JobStateError(f"job {job_id} has no failed, cancelled or skipped task to requeue")
        with self.store.transaction():
            job.state, job.finished_at = "RUNNING", 0.0
            self.store.save(job)
            for t in tasks:
                t.failures = t.reschedules = 0
                t.not_before, t.exit_code = 0.0, None
                waits = bool(spec.group(t.grp).policy.after or spec.after)
                self._set_state(t, "WAITING" if waits else "PENDING", "requeued")
            self._advance(job)
        log.info("batch.job_requeued", job_id=job_id, tasks=len(tasks))
        self._judge()
        self._changed()
        return f"requeued {len(tasks)} task(s)"

    def _changed(self) -> None:
        self.version += 1
        if self.driver is not None:
            self.interest.update(self.driver, self._wants_offers(self.clock()))

    def _cancel_job(self, job: JobRow, message: str = "cancelled") -> str:
        job_id = job.id
        if job.state in JOB_FINAL:
            return f"job already {job.state.lower()}"
        with self.store.transaction():
            job.state = "CANCELLED"
            self.store.save(job)
            for tid in self.job_tasks[job_id]:
                task = self.tasks[tid]
                if task.state in ("WAITING", "PENDING"):
                    self._set_state(task, "CANCELLED", message)
            self._advance(job)
        self.version += 1
        self._send_kills(self.clock())
        return "cancelled"

    def job_view(self, job_id: str, with_tasks: bool = True) -> dict[str, Any]:
        """A job with its tasks and their attempts (or only its summary), as JSON-ready data;
        for a periodic job's id, the periodic job and its runs."""
        return views.job_view(self, job_id, with_tasks)

    def jobs_view(self) -> dict[str, Any]:
        """Every job (summaries, newest last) and every periodic job."""
        return views.jobs_view(self)

    def _job_env(self, task: TaskRow) -> dict[str, str]:
        """What a task learns of its job: its id, the attempt, and for a
        periodic job's run the time it was due (whole UNIX seconds)."""
        env = {"CORRAL_JOB_ID": task.job_id, "CORRAL_ATTEMPT": str(task.attempts)}
        scheduled = self.jobs[task.job_id].scheduled_at
        if scheduled:
            env["CORRAL_SCHEDULED_TIME"] = str(int(scheduled))
        return env

    # -- scheduler callbacks -----------------------------------------------------

    async def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        self.driver = driver
        if framework_id != self.framework_id:
            self.framework_id = framework_id
            self.store.set_framework_id(framework_id)
        # Every attempt that may be running, by id: the master answers with its
        # state, or UNKNOWN if the launch never reached it.
        live = [(a.id, a.agent_id) for a in self.live.values()]
        if live:
            driver.reconcile(live)
        # The same master may still hold us suppressed (a reconnect, a restart
        # of this service); a new leader does not: say what we want either way.
        self.interest.sync(driver, self._wants_offers(self.clock()))

    def forget_framework(self) -> None:
        """The master no longer knows our framework id (torn down or timed out):
        its tasks were killed, so every live attempt is lost and tried again."""
        now = self.clock()
        with self.store.transaction():
            self.framework_id = ""
            self.store.set_framework_id("")
            for a in list(self.live.values()):
                self._end_attempt(a, "LOST", now, message="the framework was removed by the master")
        self.version += 1

    def _room(self, key: tuple[str, str]) -> int | None:
        """How many more of the group may launch now (``max_running``), or None: no limit."""
        limit = self.specs[key[0]].group(key[1]).policy.max_running
        if limit is None:
            return None
        counts = self.counts[key]
        return max(0, limit - counts["STAGING"] - counts["RUNNING"])

    def _launchable(self, now: float, first_only: bool = False) -> list[TaskRow]:
        """The pending tasks that may launch now, in order: past their backoff,
        their job not held, their group under its ``max_running`` (the first
        one only, to know whether to ask for offers)."""
        out: list[TaskRow] = []
        room: dict[tuple[str, str], int | None] = {}
        for tid in self.pending:
            task = self.tasks[tid]
            if task.not_before > now or self.jobs[task.job_id].held:
                continue
            key = (task.job_id, task.grp)
            if key not in room:
                room[key] = self._room(key)
            left = room[key]
            if left is not None:
                if left == 0:
                    continue
                room[key] = left - 1
            out.append(task)
            if first_only:
                break
        return out

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        now = self.clock()
        todo = self._launchable(now)
        busy: dict[tuple[str, str], set[str]] = {}
        # Refuse an unused offer for a while, but not past the end of a retry's
        # backoff: that task will want it then.
        waits = [self.tasks[t].not_before - now for t in self.pending if self.tasks[t].not_before > now]
        refuse_s = max(0.05, min([self.decline_refuse_s, *waits]))
        if todo and len(offers) > 1:
            # Bin-pack: the offer the head of the queue fills most goes first.
            offers = order_offers(self.ask(todo[0]), offers, binpack)
        for offer in offers:
            chosen = self._place(todo, offer, busy) if todo else []
            if not chosen:
                driver.decline(offer, refuse_s=refuse_s)
                continue
            taken = {t.id for t in chosen}
            todo = [t for t in todo if t.id not in taken]
            launch = []
            with self.store.transaction():
                for task in chosen:
                    task.attempts += 1
                    attempt = AttemptRow(
                        f"{task.id}.a{task.attempts}",
                        task.id,
                        task.attempts,
                        offer.agent_id,
                        offer.hostname,
                        TaskState.STAGING.name,
                        now,
                        queued_at=task.queued_at,
                    )
                    task.current, task.agent_id, task.hostname = attempt.id, offer.agent_id, offer.hostname
                    self._set_state(task, "STAGING")
                    self.store.save(attempt)
                    self._add_attempt(attempt)
                    base = self._task_def(task)
                    env = {**base.env, **self._job_env(task)}
                    launch.append(replace(base, task_id=attempt.id, env=env))
            # Leftovers come straight back (refuse 0): we may want them next cycle.
            driver.launch(offer, launch, refuse_s=0.0)
            self.version += 1
        self.interest.update(driver, self._wants_offers(now))

    def _place(
        self, todo: list[TaskRow], offer: Offer, busy: dict[tuple[str, str], set[str]]
    ) -> list[TaskRow]:
        """The tasks (in order) that fit this offer together, by the placement
        pipeline (resources, constraints, one per host, image). A group refused
        once is skipped for the rest; its reason is kept for ``explain``."""
        left = offer.resources
        chosen: list[TaskRow] = []
        refused: set[tuple[str, str]] = set()
        for task in todo:
            key = (task.job_id, task.grp)
            if key in refused:
                continue
            ask = self.ask(task)
            siblings = NO_SIBLINGS
            if ask.unique_host:
                hosts = busy.get(key)
                if hosts is None:
                    hosts = busy[key] = {
                        a.agent_id
                        for a in self.live.values()
                        if self.tasks[a.task].job_id == key[0] and self.tasks[a.task].grp == key[1]
                    }
                siblings = Siblings(frozenset(hosts))
            here = Candidate(offer.agent_id, offer.hostname, left, offer.attributes)
            reason = feasible(ask, here, siblings)
            if reason is not None:
                refused.add(key)
                self.rejections.setdefault(key, {})[offer.agent_id] = reason
                continue
            if ask.unique_host:
                busy[key].add(offer.agent_id)
            self.rejections.get(key, {}).pop(offer.agent_id, None)
            chosen.append(task)
            left = left - ask.resources
        return chosen

    def ask(self, task: TaskRow) -> Ask:
        """What the task needs of an agent (one per group: they are alike)."""
        key = (task.job_id, task.grp)
        ask = self._asks.get(key)
        if ask is None:
            policy = self.group(task).policy
            base = self._task_def(task)
            ask = self._asks[key] = Ask(
                base.resources, policy.constraints, unique_host=policy.unique_host, image=base.image
            )
        return ask

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        attempt = self.attempts.get(status.task_id)
        if attempt is None or attempt.id not in self.live:
            return  # not ours, or a duplicate of an end already recorded
        now = self.clock()
        task = self.tasks[attempt.task]
        with self.store.transaction():
            if status.agent_id:
                attempt.agent_id = status.agent_id
            if status.state is TaskState.UNKNOWN:
                # The master never heard of it: the launch was lost (we crashed
                # or the connection broke before it went out). Not a failure.
                self._end_attempt(attempt, "LOST", now, message="launch lost before reaching the master")
            elif status.state.is_terminal:
                self._end_attempt(attempt, status.state.name, now, status)
            else:
                attempt.state = status.state.name
                if status.state is TaskState.RUNNING and not attempt.started_at:
                    attempt.started_at = status.timestamp or now
                self.store.save(attempt)
                if task.current == attempt.id and task.state in ("STAGING", "RUNNING"):
                    running = status.state in (TaskState.RUNNING, TaskState.KILLING, TaskState.UNREACHABLE)
                    self._set_state(task, "RUNNING" if running else "STAGING", status.message or "")
        self.version += 1
        self.interest.update(driver, self._wants_offers(now))

    def _end_attempt(
        self, attempt: AttemptRow, state: str, now: float, status: TaskStatus | None = None, message: str = ""
    ) -> None:
        """Record the end of an attempt and decide the task's next state (in a transaction)."""
        task = self.tasks[attempt.task]
        job = self.jobs[task.job_id]
        group = self.group(task)
        attempt.state, attempt.finished_at = state, now
        if status is not None:
            # The agent's clock (or the master's, for an end it decided), not
            # the arrival: an update held while we were away is on time.
            attempt.finished_at = status.timestamp or now
            attempt.exit_code, attempt.signal = status.exit_code, status.signal
            attempt.reason = status.reason.value  # the name as a plain str, in every store
            attempt.cpu_time_s, attempt.mem_peak_bytes = status.cpu_time_s, status.mem_peak_bytes
            message = status.message
            if status.stderr_tail and state != "FINISHED":
                message += " | stderr: " + status.stderr_tail.strip().splitlines()[-1][:200]
        if attempt.timed_out:
            message = f"timed out after {group.policy.timeout_s:g}s; {message}"
        attempt.message = message
        self.store.save(attempt)
        self.live.pop(attempt.id, None)
        self._kills.pop(attempt.id, None)
        if task.current != attempt.id:
            return
        task.current = ""
        task.exit_code = attempt.exit_code
        # Not the task's fault (its launch or its agent was lost): try again
        # without a retry; but a try that ran past its timeout failed whatever ended it.
        lost = (status is None or state in INFRASTRUCTURE_ENDS) and not attempt.timed_out
        if state == "FINISHED":
            self._set_state(task, "FINISHED", "")
        elif job.state == "CANCELLED":
            self._set_state(task, "CANCELLED", "cancelled")
        elif lost:
            if status is not None:
                # A launch lost with the engine's own restart (no status) costs
                # nothing: the cap is for agents that keep losing the task.
                task.reschedules += 1
            if task.reschedules > MAX_RESCHEDULES:
                why = f"lost {task.reschedules} times to its agent or launch (limit {MAX_RESCHEDULES})"
                self._set_state(task, "FAILED", f"{why}; last: {state.lower()}: {message}")
            else:
                n = f"{task.reschedules}/{MAX_RESCHEDULES}"
                self._set_state(
                    task, "PENDING", f"try {task.attempts} {state.lower()}, rescheduled ({n}): {message}"
                )
        else:
            task.failures += 1
            if task.failures <= group.policy.retries:
                task.not_before = now + group.policy.backoff(task.failures)
                self._set_state(task, "PENDING", f"try {task.attempts} {state.lower()}: {message}")
            else:
                self._set_state(task, "FAILED", message)
        self._advance(job)

    # -- placement verdicts and explanations ------------------------------------

    def _pending_groups(self) -> dict[tuple[str, str], list[TaskRow]]:
        groups: dict[tuple[str, str], list[TaskRow]] = {}
        for tid in self.pending:
            t = self.tasks[tid]
            groups.setdefault((t.job_id, t.grp), []).append(t)
        return groups

    def set_agents(self, agents: list[Candidate]) -> None:
        """The cluster's agents (``ListAgents``, see corral.frameworks.agents):
        every pending group is judged against their totals at once."""
        self.agents = agents
        self._judge()

    def _judge(self) -> None:
        """A pending group that no agent's total can hold fails at once saying
        why, or (``wait_for_agents``) waits, shown as unschedulable. With no
        agent listed there is nothing to judge by: agents may still register."""
        if not self.agents:
            return
        verdicts: dict[tuple[str, str], NeverFits] = {}
        changed = False
        with self.store.transaction():
            for key, tasks in self._pending_groups().items():
                verdict = never_fits(self.ask(tasks[0]), self.agents)
                if verdict is None:
                    for t in tasks:
                        if t.message.startswith("unschedulable: "):
                            t.message, changed = "", True
                            self.store.save(t)
                    continue
                if not self.group(tasks[0]).policy.wait_for_agents:
                    for t in tasks:
                        self._set_state(t, "FAILED", f"unschedulable: {verdict}")
                    log.warning("batch.unschedulable", job_id=key[0], group=key[1], why=str(verdict))
                    self._advance(self.jobs[key[0]])
                    changed = True
                    continue
                verdicts[key] = verdict
                msg = f"unschedulable: {verdict}; waiting for agents that may join (wait_for_agents)"
                for t in tasks:
                    if t.message != msg:
                        t.message, changed = msg, True
                        self.store.save(t)
        if verdicts != self.unschedulable:
            self.unschedulable, changed = verdicts, True
        if changed:
            self.version += 1

    def explain(self) -> list[dict[str, Any]]:
        """Per pending task group (its tasks are alike): what it asks, which
        checker rejected which agents (against the agents listed, and in the
        last offers) and the smallest change that would make it fit."""
        out = []
        for key, tasks in self._pending_groups().items():
            ask = self.ask(tasks[0])
            siblings = NO_SIBLINGS
            if ask.unique_host:
                siblings = Siblings(
                    frozenset(
                        a.agent_id
                        for a in self.live.values()
                        if (self.tasks[a.task].job_id, self.tasks[a.task].grp) == key
                    )
                )
            out.append(
                pending_view(
                    ask,
                    self.agents,
                    siblings,
                    self.rejections.get(key, {}),
                    job_id=key[0],
                    group=key[1],
                    tasks=[t.id for t in tasks],
                )
            )
        return out

    def _wants_offers(self, now: float) -> bool:
        return bool(self._launchable(now, first_only=True))

    # -- timers ---------------------------------------------------------------

    def tick(self) -> None:
        """Timeouts, kills of cancelled jobs, periodic runs, revive after a
        backoff. Call every fraction of a second while connected."""
        now = self.clock()
        for p in list(self.periodic.values()):
            if p.state == "ACTIVE" and now >= p.next_run:
                self._run_periodic(p, now)
        self._send_kills(now)
        if self.driver is not None and self.driver.connected.is_set():
            self.interest.update(self.driver, self._wants_offers(now))
            self._reconcile_unreachable(self.driver, now)

    def _reconcile_unreachable(self, driver: SchedulerDriver, now: float) -> None:
        if now - self._reconciled_at < RECONCILE_UNREACHABLE_S:
            return
        self._reconciled_at = now
        away = [(a.id, a.agent_id) for a in self.live.values() if a.state == TaskState.UNREACHABLE.name]
        if away:
            with contextlib.suppress(NotConnectedError):
                driver.reconcile(away)

    def _run_periodic(self, p: PeriodicRow, now: float) -> None:
        checked = self._periodic_spec(p)
        if checked is None:
            return
        spec, raw, cron = checked
        # A slot missed while no instance led runs once, late (as a Kubernetes
        # CronJob without a deadline does); the slots in between are skipped.
        slot, p.next_run = p.next_run, cron.next_after_ts(now)
        running = [j for j in self.jobs.values() if j.periodic == p.id and j.state == "RUNNING"]
        if running and spec.concurrency_policy == "forbid":
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
            p.message = f"the run due at {when} was skipped: {running[-1].id} still runs (forbid)"
            self.store.save(p)
            self.version += 1
            log.info("batch.periodic_skipped", periodic_id=p.id, running=running[-1].id)
            return
        if running and spec.concurrency_policy == "replace":
            for j in running:
                self._cancel_job(j, "cancelled: replaced by the next run of its periodic job")
                log.info("batch.periodic_replaced", periodic_id=p.id, job_id=j.id)
        # One commit for the run and the periodic row's next time: a leader
        # killed in between must not leave a standby to start this run again.
        with self.store.transaction():
            job_id = self._start_job(spec, raw, periodic=p.id, scheduled_at=slot)
            p.last_job, p.message = job_id, ""
            self.store.save(p)
        log.info("batch.periodic_run", periodic_id=p.id, job_id=job_id)

    def _periodic_spec(self, p: PeriodicRow) -> tuple[JobSpec, dict[str, Any], Cron] | None:
        """A stored periodic job's spec, raw table and schedule; or None after
        marking it FAILED with the reason (a row written by an older version, or
        by hand, must not stop the service from serving the others)."""
        try:
            if not isinstance(p.schedule, str) or not isinstance(p.spec, str):
                raise JobSpecError("the stored schedule and spec must be text")
            if isinstance(p.next_run, bool) or not isinstance(p.next_run, int | float):
                raise JobSpecError(f"next_run: must be a time in seconds, got {p.next_run!r}")
            try:
                raw = json.loads(p.spec)
            except ValueError as e:
                raise JobSpecError(f"not valid JSON: {e}") from None
            if not isinstance(raw, dict):
                raise JobSpecError(f"must be a table, got {type(raw).__name__}")
            spec = parse_job(raw)
            cron = parse_cron(p.schedule)
        except (ValueError, TypeError) as e:  # JobSpecError, CronError; TypeError: a shape parse_job missed
            problem = f"stored spec unreadable: {e}"
            log.error("batch.periodic_invalid", periodic_id=p.id, error=problem)
            with self.store.transaction():
                p.state, p.message = "FAILED", f"{problem} (submit it again to replace it)"
                self.store.save(p)
            self.version += 1
            return None
        self.periodic_policy[p.id] = spec.concurrency_policy
        return spec, raw, cron

    def _send_kills(self, now: float) -> None:
        driver = self.driver
        for a in list(self.live.values()):
            task = self.tasks[a.task]
            job = self.jobs[task.job_id]
            timeout = self.group(task).policy.timeout_s
            expired = timeout is not None and now - a.launched_at > timeout
            if not expired and job.state != "CANCELLED":
                continue
            if expired and not a.timed_out:
                a.timed_out = True
                self.store.save(a)
            if now - self._kills.get(a.id, -KILL_RETRY_S) < KILL_RETRY_S:
                continue
            if driver is None or not driver.connected.is_set():
                continue
            try:
                driver.kill(a.id, a.agent_id)
            except NotConnectedError:
                continue
            self._kills[a.id] = now
