"""Runs COUNT copies of a command, on agents that match the constraints, then
stops: exit status 0 if every copy finished, else 1."""

from __future__ import annotations

from corral.frameworks import Offer, Scheduler, SchedulerDriver, Task, TaskStatus
from corral.frameworks.constraints import parse_constraint, satisfies
from corral.frameworks.interest import OfferInterest
from corral.frameworks.placement import pack
from corral.resources import Resources


class Hello(Scheduler):
    """Runs `count` copies of a command, then stops (an example plugin)."""

    def __init__(
        self, count: int = 3, command: str = "echo hello", constraints: list[str] | None = None
    ) -> None:
        self.todo = [
            Task(f"hello-{i}", command, Resources.of(cpus=0.1, mem=32), env={"HELLO_INDEX": str(i)})
            for i in range(count)
        ]
        self.constraints = [parse_constraint(c) for c in constraints or []]
        self.ended: dict[str, str] = {}
        self.count = count
        self.interest = OfferInterest()

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        for offer in offers:
            chosen, _ = pack(self.todo, offer) if satisfies(offer, self.constraints) is None else ([], None)
            if not chosen:
                driver.decline(offer, refuse_s=5)
                continue
            self.todo = [t for t in self.todo if t not in chosen]
            driver.launch(offer, chosen)
        self.interest.update(driver, wants_offers=bool(self.todo))

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        if status.state.is_terminal:
            self.ended[status.task_id] = status.state.name
            print(f"{status.task_id} {status.state.name}", flush=True)
            if len(self.ended) == self.count:
                # `corral framework run hello` exits with this: 1 if any copy failed.
                failed = any(state != "FINISHED" for state in self.ended.values())
                driver.stop(exit_code=1 if failed else 0)
