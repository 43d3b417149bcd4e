"""Samples of what the cluster says and what really runs, taken periodically.

Each :class:`Sample` holds, at one moment: which master leads; per agent, its
total and allocated resources as the leader sees them; the leader's tasks
(completed ones too); the tasks each agent reports running (``GetUsage``,
answered by the agents over their streams); and, read on this host without
asking corral, the task ids that have a live process in each agent's
container cgroups (the ``CORRAL_TASK_ID`` of the process's environment).
Plus which nodes' processes are gone. Samples are plain data (JSON-able),
the input of :mod:`corral.chaos.invariants`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog

from corral.cluster import topology
from corral.cluster.state import ClusterState, alive
from corral.cluster.tls import operator_credentials
from corral.codec import resources_from_proto
from corral.errors import CorralError
from corral.proto import messages_pb2 as pb
from corral.proto import operator_pb2 as op
from corral.proto import operator_pb2_grpc
from corral.transport import make_sync_channel

log = structlog.get_logger("corral.chaos.observer")
_CALL_TIMEOUT_S = 3.0
_LEADER_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class AgentObs:
    agent_id: str
    hostname: str
    connected: bool
    total: str  # Resources.format()
    allocated: str


@dataclass(frozen=True)
class TaskObs:
    framework_id: str
    task_id: str
    agent_id: str
    state: str  # a TaskState name: RUNNING, FINISHED, ...
    resources: str


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the run started
    leader: str | None  # the leading master's node name
    agents: tuple[AgentObs, ...] = ()
    tasks: tuple[TaskObs, ...] = ()
    #: (agent id, task id) the agents report running; None if the leader could not be asked
    reported: tuple[tuple[str, str], ...] | None = None
    unanswered: tuple[str, ...] = ()  # agents that did not answer the usage question
    #: (agent hostname, task id) with a live process in that agent's containers
    live: tuple[tuple[str, str], ...] = ()
    dead: tuple[str, ...] = ()  # nodes whose process is gone
    faulted: tuple[str, ...] = ()  # nodes under a fault at the time (kill faults: expected dead)
    errors: tuple[str, ...] = ()


def _state_name(value: int) -> str:
    return pb.TaskState.Name(value).removeprefix("TASK_") if value in pb.TaskState.values() else "UNKNOWN"


def _operator(state: ClusterState, address: str) -> tuple[grpc.Channel, Any]:
    channel = make_sync_channel(address, operator_credentials(state))
    return channel, operator_pb2_grpc.OperatorStub(channel)


def leader_of(state: ClusterState) -> str | None:
    """The node name of the master that answers it leads (the first if two do)."""
    for n in state.plan.role("master"):
        proc = state.processes.get(n.name)
        if proc is None or not alive(proc):
            continue
        channel, stub = _operator(state, f"{n.address}:{topology.MASTER_PORT}")
        try:
            if stub.GetMasterInfo(op.GetMasterInfoRequest(), timeout=_LEADER_TIMEOUT_S).leading:
                return n.name
        except grpc.RpcError:
            continue
        finally:
            channel.close()
    return None


def _read_task_id(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return None
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read()
    except (OSError, IndexError):
        return None
    for item in env.split(b"\0"):
        if item.startswith(b"CORRAL_TASK_ID="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


def live_tasks(state: ClusterState, cgroup_dirs: Callable[[str], tuple[Path, ...]]) -> list[tuple[str, str]]:
    """(agent hostname, task id) for every live task process under each agent's
    ``containers`` cgroup. ``cgroup_dirs`` maps a cgroup path to its directories."""
    out: set[tuple[str, str]] = set()
    for n in state.plan.role("agent"):
        containers = f"{topology.node_cgroup(state.plan, n)}/containers"
        for base in cgroup_dirs(containers)[:1]:  # one hierarchy lists every process
            if not base.is_dir():
                continue
            for dirpath, _dirs, files in os.walk(base):
                if "cgroup.procs" not in files:
                    continue
                with contextlib.suppress(OSError, ValueError):
                    pids = [int(x) for x in Path(dirpath, "cgroup.procs").read_text().split()]
                    for pid in pids:
                        task_id = _read_task_id(pid)
                        if task_id is not None:
                            out.add((n.hostname, task_id))
    return sorted(out)


class Observer:
    """Takes samples of one cluster; :meth:`start` samples every ``interval_s``
    in a thread until :meth:`stop` (at most ``max_samples``)."""

    def __init__(
        self,
        state: ClusterState,
        started_at: float,
        faulted: Callable[[], tuple[str, ...]] = tuple,
        fault_lock: threading.Lock | None = None,
        interval_s: float = 1.0,
        max_samples: int = 100_000,
    ) -> None:
        self.state = state
        self.started_at = started_at
        self.faulted = faulted
        self.fault_lock = fault_lock or threading.Lock()
        self.interval_s = interval_s
        self.max_samples = max_samples
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        from corral.slave.containerizer.cgroups import probe

        try:
            self._cgroup_dirs: Callable[[str], tuple[Path, ...]] = probe().dirs
        except (CorralError, OSError):
            self._cgroup_dirs = lambda _path: ()

    def sample(self) -> Sample:
        """One sample, now (bounded: every call has a deadline)."""
        t = time.monotonic() - self.started_at
        with self.fault_lock:  # no fault applied or healed between the two reads
            faulted = self.faulted()
            dead = tuple(sorted(name for name, p in self.state.processes.items() if not alive(p)))
        live = tuple(live_tasks(self.state, self._cgroup_dirs))
        leader = leader_of(self.state)
        if leader is None:
            return Sample(t, None, live=live, dead=dead, faulted=faulted, errors=("no master leads",))
        n = self.state.plan.node(leader)
        channel, stub = _operator(self.state, f"{n.address}:{topology.MASTER_PORT}")
        errors: list[str] = []
        agents: tuple[AgentObs, ...] = ()
        tasks: tuple[TaskObs, ...] = ()
        reported: tuple[tuple[str, str], ...] | None = None
        unanswered: tuple[str, ...] = ()
        try:
            resp = stub.ListAgents(op.ListAgentsRequest(), timeout=_CALL_TIMEOUT_S)
            agents = tuple(
                AgentObs(
                    a.agent_info.id,
                    a.agent_info.hostname,
                    a.connected,
                    resources_from_proto(a.total).format(),
                    resources_from_proto(a.allocated).format(),
                )
                for a in resp.agents
            )
            listed = stub.ListTasks(op.ListTasksRequest(include_completed=True), timeout=_CALL_TIMEOUT_S)
            tasks = tuple(
                TaskObs(
                    t.framework_id,
                    t.task_info.task_id,
                    t.task_info.agent_id,
                    _state_name(t.status.state),
                    resources_from_proto(t.task_info.resources).format(),
                )
                for t in listed.tasks
            )
            usage = stub.GetUsage(op.GetUsageRequest(), timeout=_CALL_TIMEOUT_S * 2)
            reported = tuple(sorted((u.agent_id, u.task_id) for u in usage.usages))
            unanswered = tuple(usage.errors)
        except grpc.RpcError as e:
            errors.append(f"{leader}: {e.code().name}: {e.details()}")
        except (CorralError, ValueError) as e:
            errors.append(f"{leader}: {e}")
        finally:
            channel.close()
        return Sample(t, leader, agents, tasks, reported, unanswered, live, dead, faulted, tuple(errors))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="chaos-observer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        for _ in range(self.max_samples):
            began = time.monotonic()
            try:
                s = self.sample()
            except Exception:  # the observer must not die silently mid-run
                log.exception("chaos.sample_failed")
                s = Sample(time.monotonic() - self.started_at, None, errors=("sample failed",))
            with self._lock:
                self.samples.append(s)
            if self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - began))):
                return

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def taken(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)


def sample_dict(s: Sample) -> dict[str, Any]:
    """A sample as JSON-able data."""
    from dataclasses import asdict

    return asdict(s)


__all__ = ["AgentObs", "Observer", "Sample", "TaskObs", "leader_of", "live_tasks", "sample_dict"]
