"""The batch scheduler: runs a job's tasks to completion.

Pending tasks are packed first-fit into each offer; offers with nothing to
place are declined; once everything is launched the scheduler suppresses
offers, as DESIGN.md asks of a polite framework. A task the master dropped
(an offer that went stale in flight) is retried up to ``max_drops`` times;
failures of the command itself are reported, not retried (retries with backoff
are the batch framework issue's).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.placement import pack
from corral.frameworks.scheduler import Scheduler
from corral.frameworks.types import MasterInfo, Offer, Task, TaskState, TaskStatus

log = structlog.get_logger(__name__)


@dataclass
class TaskProgress:
    task: Task
    status: TaskStatus | None = None
    agent_id: str = ""
    hostname: str = ""
    drops: int = 0
    launched_at: float = 0.0
    finished_at: float = 0.0
    #: the subscription (see BatchScheduler.epoch) it was launched under
    epoch: int = 0

    @property
    def state(self) -> TaskState | None:
        return self.status.state if self.status else None


@dataclass
class BatchScheduler(Scheduler):
    tasks: list[Task]
    on_update: Callable[[TaskProgress], None] | None = None
    max_drops: int = 3
    decline_refuse_s: float = 5.0
    clock: Callable[[], float] = field(default_factory=lambda: asyncio.get_event_loop().time)

    def __post_init__(self) -> None:
        self.progress: dict[str, TaskProgress] = {t.task_id: TaskProgress(t) for t in self.tasks}
        self.pending: list[str] = [t.task_id for t in self.tasks]
        self.done = asyncio.Event()
        self.suppressed = False
        self.framework_id = ""
        self.epoch = 0
        if not self.tasks:
            self.done.set()

    @property
    def failed(self) -> list[TaskProgress]:
        return [p for p in self.progress.values() if p.state is not TaskState.FINISHED]

    async def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        self.framework_id = framework_id
        self.epoch += 1
        if self.suppressed and self.pending:
            driver.revive()
            self.suppressed = False
        # After a reconnect, ask about every task we launched and have not
        # seen end, by id: a launch lost with the old connection is answered
        # UNKNOWN and goes back to the queue (implicit reconciliation would
        # only cover tasks the master knows).
        launched = [
            (task_id, p.agent_id)
            for task_id, p in self.progress.items()
            if p.launched_at and not (p.state is not None and p.state.is_terminal)
        ]
        if launched:
            driver.reconcile(launched)

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        for offer in offers:
            if not self.pending:
                driver.decline(offer, refuse_s=self.decline_refuse_s)
                continue
            todo = [self.progress[t].task for t in self.pending]
            chosen, _ = pack(todo, offer)
            if not chosen:
                driver.decline(offer, refuse_s=self.decline_refuse_s)
                continue
            now = self.clock()
            chosen_ids = {t.task_id for t in chosen}
            self.pending = [t for t in self.pending if t not in chosen_ids]
            for task in chosen:
                p = self.progress[task.task_id]
                p.agent_id, p.hostname, p.launched_at = offer.agent_id, offer.hostname, now
                p.epoch = self.epoch
            # Leftovers come straight back (refuse 0): we may want them next cycle.
            driver.launch(offer, chosen, refuse_s=0.0)
        if not self.pending and not self.suppressed:
            driver.suppress()
            self.suppressed = True

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        p = self.progress.get(status.task_id)
        if p is None:
            return
        if p.state is not None and p.state.is_terminal:
            return  # a duplicate (at-least-once delivery)
        if status.state is TaskState.UNKNOWN:
            if p.epoch == self.epoch or not p.launched_at:
                # Launched under this subscription (a late answer about an
                # earlier attempt) or already queued again: never twice.
                return
            # The master never heard of it: the launch was lost in flight.
            p.status, p.launched_at = None, 0.0
            if status.task_id not in self.pending:
                self.pending.append(status.task_id)
            if self.suppressed:
                driver.revive()
                self.suppressed = False
            return
        if status.state is TaskState.DROPPED and p.drops < self.max_drops:
            p.drops += 1
            p.status = None
            self.pending.append(status.task_id)
            if self.suppressed:
                driver.revive()
                self.suppressed = False
            return
        p.status = status
        if status.agent_id:
            p.agent_id = status.agent_id
        if status.state.is_terminal:
            p.finished_at = self.clock()
        if self.on_update is not None:
            self.on_update(p)
        if all(q.state is not None and q.state.is_terminal for q in self.progress.values()):
            self.done.set()

    async def error(self, driver: SchedulerDriver, code: str, message: str) -> None:
        log.warning("batch.master_error", code=code, message=message)
