"""Apply a fault event to the cluster's nodes, and heal it.

Through the cluster's own fault verbs (:func:`corral.cluster.runner.signal_node`,
``start_node``, ``set_link``): ``kill -9`` and a start as before, SIGSTOP and
SIGCONT, the node's veth down and up. Healing is idempotent and also mends a
node that died meanwhile, so a run always ends with every node it touched
running and linked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from corral.chaos.schedule import LEADER, FaultEvent
from corral.cluster import runner
from corral.cluster.state import ClusterState, alive
from corral.errors import CorralError

log = structlog.get_logger("corral.chaos.injector")
_GONE_TIMEOUT_S = 10.0


@dataclass
class Applied:
    """A fault in force: the event and the nodes it was applied to."""

    event: FaultEvent
    nodes: tuple[str, ...]
    applied_at: float
    healed_at: float | None = None
    errors: list[str] = field(default_factory=list)


class Injector:
    """Applies and heals faults on one cluster. ``leader`` names the leading
    master (or None) when a fault targets :data:`LEADER`."""

    def __init__(self, state: ClusterState, leader: Callable[[], str | None]) -> None:
        self.state = state
        self.leader = leader

    def _resolve(self, event: FaultEvent) -> tuple[str, ...]:
        out = []
        for target in event.targets:
            if target == LEADER:
                name = self.leader() or self.state.plan.role("master")[0].name
                out.append(name)
            else:
                out.append(target)
        return tuple(out)

    def apply(self, event: FaultEvent, now: float) -> Applied:
        """Inflict ``event``; errors (a node already gone) are recorded, not raised."""
        applied = Applied(event, self._resolve(event), now)
        action = event.kind.split("-", 1)[1]
        for name in applied.nodes:
            try:
                if action in ("kill", "node", "quorum"):
                    self._kill(name)
                elif action == "pause":
                    runner.signal_node(self.state, name, signal.SIGSTOP)
                elif action == "partition":
                    runner.set_link(self.state, name, up=False)
            except (CorralError, OSError) as e:
                applied.errors.append(f"{name}: {e}")
        log.info("chaos.fault", kind=event.kind, nodes=list(applied.nodes), duration_s=event.duration_s)
        return applied

    def heal(self, applied: Applied, now: float) -> None:
        """Undo ``applied``: start killed nodes, resume paused ones, restore links."""
        action = applied.event.kind.split("-", 1)[1]
        for name in applied.nodes:
            try:
                if action == "partition":
                    runner.set_link(self.state, name, up=True)
                elif action == "pause":
                    self._resume(name)
                self._ensure_running(name)
            except (CorralError, OSError) as e:
                applied.errors.append(f"heal {name}: {e}")
        applied.healed_at = now
        log.info("chaos.healed", kind=applied.event.kind, nodes=list(applied.nodes))

    def heal_all(self) -> list[str]:
        """Every node running, resumed and linked (the end of a run, or after an
        interruption); returns what could not be mended."""
        problems = []
        for n in self.state.plan.nodes:
            try:
                runner.set_link(self.state, n.name, up=True)
                self._resume(n.name)
                self._ensure_running(n.name)
            except (CorralError, OSError) as e:
                problems.append(f"{n.name}: {e}")
        return problems

    def _kill(self, name: str) -> None:
        proc = self.state.processes.get(name)
        runner.signal_node(self.state, name, signal.SIGKILL)
        if proc is None:
            return
        deadline = time.monotonic() + _GONE_TIMEOUT_S
        while alive(proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        # A node started by this process is its child: reap it.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(proc.pid, os.WNOHANG)

    def _resume(self, name: str) -> None:
        proc = self.state.processes.get(name)
        if proc is not None and alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)

    def _ensure_running(self, name: str) -> None:
        proc = self.state.processes.get(name)
        if proc is None or not alive(proc):
            if proc is not None:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(proc.pid, os.WNOHANG)
            runner.start_node(self.state, name)
