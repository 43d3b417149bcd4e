"""A service spec in TOML: what to keep running, where, how to check it and how
to roll out a new version. Unknown keys are refused, naming them.

    name = "web"
    instances = 3
    command = "python3 -m http.server $PORT0"
    cpus = 0.1
    mem = 64
    ports = 1                          # PORT0.. in the environment, from the offer
    env = { GREETING = "hi" }
    constraints = ["unique hostname", "unique rack", "zone == a"]

    [health_check]
    type = "http"                      # or "tcp" or "command" (with command = "...")
    port_index = 0                     # the instance's PORT0 (or port = 8080)
    path = "/"
    interval_s = 2
    grace_period_s = 10
    consecutive_failures = 3

    [restart]
    backoff_s = 1                      # 1, 2, 4 ... s between restarts after failures
    backoff_max_s = 60

    [update]
    max_unavailable = 1                # healthy instances may drop to instances - 1
    max_surge = 1                      # at most instances + 1 run during an update
    rollback_after_failures = 3        # failures of the new version that roll it back
    healthy_deadline_s = 60            # a new instance not healthy by then counts as failed
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.frameworks.batch.spec import parse_user
from corral.frameworks.constraints import Constraint, parse_constraint
from corral.frameworks.health import KINDS, HealthCheck
from corral.frameworks.types import Task
from corral.resources import RangeSet, Resources

_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
MAX_INSTANCES = 1000
MAX_PORTS = 16
TOP_KEYS = frozenset(
    {
        "name",
        "instances",
        "command",
        "image",
        "cpus",
        "mem",
        "disk",
        "env",
        "ports",
        "network",
        "user",
        "kill_grace_s",
        "constraints",
        "unique_host",
        "health_check",
        "restart",
        "update",
    }
)
HEALTH_KEYS = frozenset(
    {"type", "command", "port", "port_index", "path", "interval_s", "timeout_s", "grace_period_s"}
    | {"consecutive_failures"}
)
RESTART_KEYS = frozenset({"backoff_s", "backoff_max_s"})
UPDATE_KEYS = frozenset({"max_unavailable", "max_surge", "rollback_after_failures", "healthy_deadline_s"})


class ServiceSpecError(ValueError):
    """A service file is malformed; the message names the key."""


@dataclass(frozen=True)
class HealthSpec:
    kind: str
    command: str = ""
    port: int = 0
    #: which of the instance's ports to check (when ``port`` is 0)
    port_index: int = 0
    path: str = ""
    interval_s: float = 0.0
    timeout_s: float = 0.0
    grace_period_s: float = 0.0
    consecutive_failures: int = 0

    def check(self, ports: tuple[int, ...]) -> HealthCheck:
        """The agent-side check for an instance with these ports."""
        port = self.port or (ports[self.port_index] if self.kind != "command" else 0)
        return HealthCheck(
            self.kind,
            command=self.command,
            port=port,
            path=self.path if self.kind == "http" else "",
            interval_s=self.interval_s,
            timeout_s=self.timeout_s,
            grace_period_s=self.grace_period_s,
            consecutive_failures=self.consecutive_failures,
        )


@dataclass(frozen=True)
class UpdateStrategy:
    max_unavailable: int = 1
    max_surge: int = 1
    rollback_after_failures: int = 3
    healthy_deadline_s: float = 60.0


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    instances: int
    command: str
    image: str = ""
    cpus: float = 0.1
    mem: float = 32.0
    disk: float = 0.0
    env: Mapping[str, str] = field(default_factory=dict)
    ports: int = 0
    network: str = "host"
    user: tuple[int, int] | None = None
    kill_grace_s: float = 3.0
    constraints: tuple[Constraint, ...] = ()
    unique_host: bool = False
    #: at most one instance per value of each of these attributes
    unique_attributes: tuple[str, ...] = ()
    health: HealthSpec | None = None
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    update: UpdateStrategy = field(default_factory=UpdateStrategy)

    @property
    def resources(self) -> Resources:
        """What one instance needs, ports apart (they come from the offer)."""
        return Resources.of(cpus=self.cpus, mem=self.mem, disk=self.disk)

    def backoff(self, failures: int) -> float:
        """Seconds to wait before the next start after ``failures`` failures in a row."""
        if failures < 1:
            return 0.0
        return float(min(self.backoff_max_s, self.backoff_s * 2 ** min(failures - 1, 30)))

    def task(self, task_id: str, version: int, ports: RangeSet) -> Task:
        """One instance, on the given ports."""
        numbers = tuple(p for b, e in ports.intervals for p in range(b, e + 1))
        env = {
            **self.env,
            "CORRAL_SERVICE": self.name,
            "CORRAL_SERVICE_VERSION": str(version),
            **{f"PORT{i}": str(p) for i, p in enumerate(numbers)},
        }
        if numbers:
            env["PORT"] = str(numbers[0])
        resources = self.resources
        if numbers:
            resources = resources + Resources.of(ranges={"ports": ports})
        return Task(
            task_id=task_id,
            name=f"{self.name} v{version}",
            command=self.command,
            resources=resources,
            env=env,
            kill_grace_s=self.kill_grace_s,
            labels={"service": self.name, "version": str(version)},
            network=self.network,
            user=self.user,
            health_check=self.health.check(numbers) if self.health is not None else None,
            image=self.image,
        )


def same_deployment(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two spec tables differ only in ``instances`` (a scale, not a new version)."""
    return {k: v for k, v in a.items() if k != "instances"} == {
        k: v for k, v in b.items() if k != "instances"
    }


def load_service(path: Path) -> tuple[ServiceSpec, dict[str, Any]]:
    """Parse a file; errors name the file, the line and the key."""
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise ServiceSpecError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ServiceSpecError(f"{path}: not valid TOML: {e}") from None
    try:
        return parse_service(data, default_name=path.stem), data
    except ServiceSpecError as e:
        line = locate(text, str(e))
        raise ServiceSpecError(f"{path}:{line}: {e}" if line else f"{path}: {e}") from None


_WHERE_RE = re.compile(r"^(?:(health_check|restart|update)\.)?([a-z_]+)(?:\[\d+\])?:")


def locate(text: str, message: str) -> int:
    """The line an error (``update.max_surge: ...``, ``cpus: ...``) is about, or 0."""
    m = _WHERE_RE.match(message)
    if m is None or message.startswith("unknown key"):
        unknown = re.findall(r"'(\w+)'", message) if message.startswith("unknown key") else []
        if not unknown:
            return 0
        return next(
            (i + 1 for i, line in enumerate(text.splitlines()) if re.match(rf"\s*{unknown[0]}\s*=", line)), 0
        )
    table, key = m[1], m[2]
    if key in ("health_check", "restart", "update") and table is None:
        table, key = key, ""
    lines = text.splitlines()
    start, end = 0, len(lines)
    headers = [i for i, line in enumerate(lines) if line.strip().startswith("[")]
    if table is not None:
        begin = next((i for i in headers if lines[i].strip() == f"[{table}]"), None)
        if begin is None:
            return next((i + 1 for i, line in enumerate(lines) if line.strip().startswith(f"{table}")), 0)
        start = begin
        end = next((i for i in headers if i > begin), len(lines))
        if not key:
            unknown = re.findall(r"'(\w+)'", message)
            key = unknown[0] if unknown else ""
    else:
        end = headers[0] if headers else len(lines)
    if not key:
        return start + 1 if table is not None else 0
    for i in range(start, end):
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
            return i + 1
    return start + 1 if table is not None else 0


def _unknown(raw: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = set(raw) - allowed
    if unknown:
        prefix = f"{where}: unknown" if where else "unknown"
        raise ServiceSpecError(f"{prefix} key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def _number(raw: Mapping[str, Any], key: str, where: str, default: float, minimum: float = 0.0) -> float:
    value = raw.get(key, default)
    name = f"{where}.{key}" if where else key
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ServiceSpecError(f"{name}: must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ServiceSpecError(f"{name}: must be >= {minimum:g}, got {value!r}")
    return float(value)


def _integer(raw: Mapping[str, Any], key: str, where: str, default: int, lo: int, hi: int) -> int:
    value = raw.get(key, default)
    name = f"{where}.{key}" if where else key
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ServiceSpecError(f"{name}: must be an integer from {lo} to {hi}, got {value!r}")
    return value


def _table(data: Mapping[str, Any], key: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    raw = data.get(key, {})
    if not isinstance(raw, dict):
        raise ServiceSpecError(f"{key}: must be a table ([{key}])")
    _unknown(raw, allowed, key)
    return raw


def parse_service(data: Mapping[str, Any], default_name: str = "service") -> ServiceSpec:
    """Validate a service table; :class:`ServiceSpecError` names the key."""
    _unknown(data, TOP_KEYS, "")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ServiceSpecError(
            f"name: must be 1-40 lowercase letters, digits or '-' (not at the ends), got {name!r}"
        )
    command = data.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ServiceSpecError("command: must be a non-empty string")
    image = data.get("image", "")
    if not isinstance(image, str):
        raise ServiceSpecError(f"image: must be a string, got {image!r}")
    instances = _integer(data, "instances", "", 1, 0, MAX_INSTANCES)
    cpus = _number(data, "cpus", "", 0.1)
    mem = _number(data, "mem", "", 32.0)
    if cpus <= 0 and mem <= 0:
        raise ServiceSpecError("cpus: an instance needs cpus > 0 or mem > 0")
    ports = _integer(data, "ports", "", 0, 0, MAX_PORTS)
    env = data.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in env.items()
    ):
        raise ServiceSpecError("env: must be a table of strings")
    network = data.get("network", "host")
    if network not in ("host", "none"):
        raise ServiceSpecError(f"network: must be 'host' or 'none', got {network!r}")
    unique_host = data.get("unique_host", False)
    if not isinstance(unique_host, bool):
        raise ServiceSpecError(f"unique_host: must be true or false, got {unique_host!r}")
    constraints, unique_attributes = _constraints(data.get("constraints", []))
    _check_satisfiable(constraints, unique_attributes, instances)
    if "hostname" in unique_attributes:
        unique_host = True
        unique_attributes = tuple(a for a in unique_attributes if a != "hostname")
    restart = _table(data, "restart", RESTART_KEYS)
    backoff_s = _number(restart, "backoff_s", "restart", 1.0)
    update_raw = _table(data, "update", UPDATE_KEYS)
    update = UpdateStrategy(
        max_unavailable=_integer(update_raw, "max_unavailable", "update", 1, 0, MAX_INSTANCES),
        max_surge=_integer(update_raw, "max_surge", "update", 1, 0, MAX_INSTANCES),
        rollback_after_failures=_integer(update_raw, "rollback_after_failures", "update", 3, 1, 1000),
        healthy_deadline_s=_number(update_raw, "healthy_deadline_s", "update", 60.0, 0.1),
    )
    if update.max_unavailable == 0 and update.max_surge == 0:
        raise ServiceSpecError("update.max_surge: max_unavailable and max_surge cannot both be 0")
    try:
        user = parse_user(data.get("user"), "user")
    except ValueError as e:
        raise ServiceSpecError(str(e)) from None
    return ServiceSpec(
        name=name,
        instances=instances,
        command=command,
        image=image,
        cpus=cpus,
        mem=mem,
        disk=_number(data, "disk", "", 0.0),
        env={k: str(v) for k, v in env.items()},
        ports=ports,
        network=network,
        user=user,
        kill_grace_s=_number(data, "kill_grace_s", "", 3.0),
        constraints=constraints,
        unique_host=unique_host,
        unique_attributes=unique_attributes,
        health=_health(data, ports),
        backoff_s=backoff_s,
        backoff_max_s=_number(restart, "backoff_max_s", "restart", max(60.0, backoff_s)),
        update=update,
    )


def _constraints(raw: Any) -> tuple[tuple[Constraint, ...], tuple[str, ...]]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise ServiceSpecError(f"constraints: must be a list such as ['unique hostname'], got {raw!r}")
    constraints: list[Constraint] = []
    unique: list[str] = []
    for i, text in enumerate(raw):
        words = text.split() if isinstance(text, str) else []
        if len(words) == 2 and words[0] == "unique":
            unique.append("hostname" if words[1] in ("host", "hostname") else words[1])
            continue
        try:
            constraints.append(parse_constraint(text))
        except ValueError as e:
            raise ServiceSpecError(f"constraints[{i}]: {e}, or 'unique ATTRIBUTE'") from None
    return tuple(constraints), tuple(dict.fromkeys(unique))


def _check_satisfiable(constraints: tuple[Constraint, ...], unique: tuple[str, ...], instances: int) -> None:
    """Refuse constraints no cluster can meet: an attribute pinned to two
    values, or more instances than values allowed to one-per-value attributes."""
    allowed: dict[str, set[str]] = {}
    for c in constraints:
        if c.op in ("==", "in"):
            values = set(c.values) if c.attribute not in allowed else allowed[c.attribute] & set(c.values)
            if not values:
                raise ServiceSpecError(f"constraints: no value of {c.attribute!r} meets them all (at {c})")
            allowed[c.attribute] = values
    for attr in unique:
        if attr in allowed and instances > len(allowed[attr]):
            raise ServiceSpecError(
                f"constraints: 'unique {attr}' with {attr} limited to {sorted(allowed[attr])} "
                f"can place at most {len(allowed[attr])} of {instances} instances"
            )


def _health(data: Mapping[str, Any], ports: int) -> HealthSpec | None:
    if "health_check" not in data:
        return None
    raw = _table(data, "health_check", HEALTH_KEYS)
    kind = raw.get("type")
    if kind not in KINDS:
        raise ServiceSpecError(f"health_check.type: must be one of {list(KINDS)}, got {kind!r}")
    command = raw.get("command", "")
    if kind == "command" and (not isinstance(command, str) or not command.strip()):
        raise ServiceSpecError("health_check.command: a command check needs a non-empty command")
    if kind != "command" and command:
        raise ServiceSpecError(f"health_check.command: only for type 'command', not {kind!r}")
    port = _integer(raw, "port", "health_check", 0, 0, 65535)
    port_index = _integer(raw, "port_index", "health_check", 0, 0, MAX_PORTS - 1)
    if kind != "command" and port == 0 and port_index >= ports:
        raise ServiceSpecError(
            f"health_check.port_index: the service has {ports} port(s) (ports = N); "
            f"a {kind} check needs one of them or a fixed port"
        )
    path = raw.get("path", "/" if kind == "http" else "")
    if kind == "http" and (not isinstance(path, str) or not path.startswith("/")):
        raise ServiceSpecError(f"health_check.path: must start with '/', got {path!r}")
    if kind != "http" and "path" in raw:
        raise ServiceSpecError(f"health_check.path: only for type 'http', not {kind!r}")
    seconds = {k: _number(raw, k, "health_check", 0.0) for k in ("interval_s", "timeout_s", "grace_period_s")}
    for k, v in seconds.items():
        if v > 86400:
            raise ServiceSpecError(f"health_check.{k}: must be at most 86400, got {v:g}")
    return HealthSpec(
        kind=kind,
        command=command if kind == "command" else "",
        port=port,
        port_index=port_index,
        path=path if kind == "http" else "",
        consecutive_failures=_integer(raw, "consecutive_failures", "health_check", 0, 0, 1000),
        **seconds,
    )
