"""The record of what a cluster made, ``$CORRAL_HOME/clusters/NAME.json``:
the plan (namespaces, veths, bridge, addresses, cgroups), its directory and
every node's process (pid and start time, so a reused pid is never signalled).
Written before anything is created, so ``down`` can clean up a failed ``up``."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from corral.cli.discovery import state_dir
from corral.cluster.topology import NodePlan, Plan, TopologyError


class UnknownClusterError(TopologyError):
    """No cluster of that name is recorded (the CLI exits 4: not found)."""


def clusters_dir() -> Path:
    return state_dir() / "clusters"


def state_path(name: str) -> Path:
    return clusters_dir() / f"{name}.json"


@dataclass(frozen=True)
class Process:
    pid: int
    start_ticks: int  # field 22 of /proc/PID/stat: tells a reused pid apart


@dataclass
class ClusterState:
    plan: Plan
    directory: Path
    created_at: float
    processes: dict[str, Process] = field(default_factory=dict)  # node name -> process
    #: (CA, operator certificate, key) the CLI uses for this cluster; None: plaintext
    tls: tuple[str, str, str] | None = None

    @property
    def name(self) -> str:
        return self.plan.name

    def save(self) -> Path:
        path = state_path(self.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        plan = asdict(self.plan)
        plan["subnet"] = str(self.plan.subnet)
        data = {
            "plan": plan,
            "directory": str(self.directory),
            "created_at": self.created_at,
            "processes": {k: asdict(v) for k, v in self.processes.items()},
            "tls": list(self.tls) if self.tls else None,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, name: str) -> ClusterState:
        path = state_path(name)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            known = ", ".join(list_clusters()) or "none"
            raise UnknownClusterError(f"no cluster named {name!r} (known: {known})") from None
        except ValueError as e:
            raise TopologyError(f"{path} is corrupt: {e}") from None
        plan = dict(data["plan"])
        plan["subnet"] = ipaddress.IPv4Network(plan["subnet"])
        plan["nodes"] = tuple(NodePlan(**n) for n in plan["nodes"])
        return cls(
            plan=Plan(**plan),
            directory=Path(data["directory"]),
            created_at=float(data["created_at"]),
            processes={k: Process(**v) for k, v in data.get("processes", {}).items()},
            tls=(str(tls[0]), str(tls[1]), str(tls[2])) if (tls := data.get("tls")) else None,
        )

    def remove(self) -> None:
        state_path(self.name).unlink(missing_ok=True)


def list_clusters() -> list[str]:
    d = clusters_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: fields follow the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])  # field 22 overall; fields[0] is field 3 (state)


def process_state(proc: Process) -> str | None:
    """The recorded process's state letter (``R``, ``S``, ``T`` when stopped, ...),
    or None if it is gone or its pid now belongs to another process."""
    if start_ticks(proc.pid) != proc.start_ticks:
        return None
    try:
        return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def alive(proc: Process) -> bool:
    """The very process recorded is still running (not a zombie, not a reused pid)."""
    return process_state(proc) not in (None, "Z", "X")
