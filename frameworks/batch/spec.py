"""Batch job specs, read from TOML.

    name = "squares"
    schedule = "*/5 * * * *"           # optional: a periodic job (cron, UTC; needs the batch service)
    concurrency_policy = "forbid"      # with a schedule: allow | forbid (default) | replace
    after = ["afterok:prepare-1a2b3c"] # optional: wait for other jobs (deps.py; afterok,
                                       # afternotok, afterany; a job id or name)

    [[tasks]]
    name = "square"
    command = "echo $((CORRAL_TASK_INDEX * CORRAL_TASK_INDEX))"
    count = 10          # an array job: CORRAL_TASK_INDEX is 0..9
    cpus = 0.1
    mem = 32            # MiB
    env = { GREETING = "hi" }
    image = "busybox:1.35"   # optional: NAME[:TAG] in the image store, HOST[:PORT]/REPO[:TAG] of a
                             # registry, or a tarball path (--image-import-dir)
    pull_policy = "always"   # registry images: if-not-present (default), always, never
    read_only_root = false   # with an image

    [[tasks.volumes]]        # optional, repeatable
    container_path = "/data" # absolute in the image, or relative to the sandbox
    host_path = "/srv/data"  # a bind mount; without it, a tmpfs of tmpfs_size_mib
    read_only = true

With an image, ``command`` may be left out to run the image's Entrypoint and Cmd.

Errors name the key: ``tasks[0].cpus: must be > 0, got -1``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.frameworks.batch.cron import CronError, parse_cron
from corral.frameworks.batch.deps import Dependency, parse_dependencies
from corral.frameworks.batch.policy import POLICY_KEYS, Policy, check_dag, parse_policy
from corral.frameworks.placement import Ask
from corral.frameworks.types import Task, Volume
from corral.image_refs import is_remote_ref
from corral.resources import Resources

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_TASKS = 100_000
#: what a periodic job does when a run is due while an earlier one still runs, as a
#: Kubernetes CronJob's concurrencyPolicy: start it anyway (allow), skip it
#: (forbid, the default: a slow run never piles up), or cancel the earlier one (replace)
CONCURRENCY_POLICIES = ("allow", "forbid", "replace")
TOP_KEYS = ("after", "concurrency_policy", "name", "schedule", "tasks")


class JobSpecError(ValueError):
    """A job file is malformed; the message names the key."""


@dataclass(frozen=True)
class TaskGroup:
    name: str
    command: str
    cpus: float = 0.1
    mem: float = 32.0
    disk: float = 0.0
    count: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    kill_grace_s: float = 3.0
    network: str = "host"
    user: tuple[int, int] | None = None
    image: str = ""
    pull_policy: str = ""
    read_only_root: bool = False
    volumes: tuple[Volume, ...] = ()
    #: retries, timeout, constraints, unique host, dependencies (policy.py)
    policy: Policy = field(default_factory=Policy)

    def ask(self) -> Ask:
        """What each task of the group needs of an agent (the placement pipeline's input)."""
        return Ask(
            Resources.of(cpus=self.cpus, mem=self.mem, disk=self.disk),
            self.policy.constraints,
            unique_host=self.policy.unique_host,
            image=self.image,
        )


@dataclass(frozen=True)
class JobSpec:
    name: str
    groups: tuple[TaskGroup, ...]
    #: a cron expression: the batch service starts a run of the job at these times
    schedule: str = ""
    #: with a schedule: one of CONCURRENCY_POLICIES
    concurrency_policy: str = "forbid"
    #: other jobs this one waits for (deps.py)
    after: tuple[Dependency, ...] = ()

    def group(self, name: str) -> TaskGroup:
        """The task group called ``name`` (KeyError if there is none)."""
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def tasks(self, job_id: str) -> list[Task]:
        """Expand the groups into tasks with ids ``JOB.GROUP.INDEX``."""
        out = []
        for group in self.groups:
            resources = Resources.of(cpus=group.cpus, mem=group.mem, disk=group.disk)
            for i in range(group.count):
                env = {**group.env, "CORRAL_TASK_INDEX": str(i), "CORRAL_JOB": self.name}
                out.append(
                    Task(
                        task_id=f"{job_id}.{group.name}.{i}",
                        name=f"{group.name}[{i}]" if group.count > 1 else group.name,
                        command=group.command,
                        resources=resources,
                        env=env,
                        kill_grace_s=group.kill_grace_s,
                        network=group.network,
                        user=group.user,
                        image=group.image,
                        pull_policy=group.pull_policy,
                        read_only_root=group.read_only_root,
                        volumes=group.volumes,
                    )
                )
        return out


def load_job(path: Path) -> JobSpec:
    import tomllib  # here: `corral run` parses a dict and need not import it

    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise JobSpecError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise JobSpecError(f"{path}: not valid TOML: {e}") from None
    try:
        return parse_job(data, default_name=path.stem)
    except JobSpecError as e:
        line = locate(text, str(e))
        raise JobSpecError(f"{path}:{line}: {e}" if line else f"{path}: {e}") from None


_WHERE_RE = re.compile(r"^tasks\[(\d+)\](?:\.([A-Za-z_]+))?|^([A-Za-z_]+):")


def locate(text: str, message: str) -> int:
    """The line of a TOML job file an error message (``tasks[2].cpus: ...``) is about, or 0."""
    m = _WHERE_RE.match(message)
    if m is None:
        return 0
    lines = text.splitlines()
    start, end = 0, len(lines)
    key = m[3] or m[2]
    if m[1] is not None:
        headers = [i for i, line in enumerate(lines) if line.strip().startswith("[[tasks]]")]
        group = int(m[1])
        if group >= len(headers):
            return 0
        start = headers[group]
        end = headers[group + 1] if group + 1 < len(headers) else len(lines)
        if key is None:
            key = next((k for k in re.findall(r"'(\w+)'", message) if k), None)
    elif key == "tasks":
        return 0
    if key:
        for i in range(start, end):
            if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
                return i + 1
    return start + 1 if m[1] is not None else 0


def parse_job(data: Mapping[str, Any], default_name: str = "job") -> JobSpec:
    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise JobSpecError(f"name: must be 1-64 characters of [A-Za-z0-9_.-], got {name!r}")
    unknown = set(data) - set(TOP_KEYS)
    if unknown:
        raise JobSpecError(f"unknown key(s) at the top level: {sorted(unknown)}; allowed: {list(TOP_KEYS)}")
    schedule = data.get("schedule", "")
    try:
        if schedule != "":
            parse_cron(schedule)
    except CronError as e:
        raise JobSpecError(f"schedule: {e}") from None
    policy = data.get("concurrency_policy", "forbid")
    if not isinstance(policy, str) or policy.lower() not in CONCURRENCY_POLICIES:
        raise JobSpecError(
            f"concurrency_policy: must be one of {', '.join(CONCURRENCY_POLICIES)}, got {policy!r}"
        )
    if "concurrency_policy" in data and not schedule:
        raise JobSpecError("concurrency_policy: only for a periodic job (one with a schedule)")
    raw_groups = data.get("tasks")
    if not isinstance(raw_groups, list) or not raw_groups:
        raise JobSpecError("tasks: needs at least one [[tasks]] table")
    groups = [_parse_group(g, i) for i, g in enumerate(raw_groups)]
    names = [g.name for g in groups]
    for i, n in enumerate(names):
        if names.count(n) > 1:
            raise JobSpecError(f"tasks[{i}].name: {n!r} is used by more than one group")
    if sum(g.count for g in groups) > MAX_TASKS:
        raise JobSpecError(f"tasks: a job may have at most {MAX_TASKS} tasks")
    check_dag(names, [g.policy.after for g in groups], JobSpecError)
    after = parse_dependencies(data.get("after", []), JobSpecError)
    if after and schedule:
        raise JobSpecError("after: not for a periodic job (every run would wait for the same jobs)")
    return JobSpec(name, tuple(groups), schedule=schedule, concurrency_policy=policy.lower(), after=after)


def _number(raw: Mapping[str, Any], key: str, where: str, default: float, minimum: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobSpecError(f"{where}.{key}: must be a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise JobSpecError(f"{where}.{key}: must be >= {minimum:g}, got {value!r}")
    return float(value)


def _parse_group(raw: Any, index: int) -> TaskGroup:
    where = f"tasks[{index}]"
    if not isinstance(raw, dict):
        raise JobSpecError(f"{where}: must be a table")
    allowed = {
        "name",
        "command",
        "cpus",
        "mem",
        "disk",
        "count",
        "env",
        "kill_grace_s",
        "network",
        "user",
        "image",
        "pull_policy",
        "read_only_root",
        "volumes",
    }
    allowed |= POLICY_KEYS
    unknown = set(raw) - allowed
    if unknown:
        raise JobSpecError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    name = raw.get("name", f"task{index}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise JobSpecError(f"{where}.name: must be 1-64 characters of [A-Za-z0-9_.-], got {name!r}")
    image = raw.get("image", "")
    if not isinstance(image, str):
        raise JobSpecError(f"{where}.image: must be a string (NAME[:TAG] or a tarball path), got {image!r}")
    pull_policy = raw.get("pull_policy", "")
    if pull_policy not in ("", "if-not-present", "always", "never"):
        raise JobSpecError(f"{where}.pull_policy: one of if-not-present, always, never; got {pull_policy!r}")
    if pull_policy and not is_remote_ref(image):
        raise JobSpecError(f"{where}.pull_policy: only for a registry image (HOST[:PORT]/REPO[:TAG])")
    read_only_root = raw.get("read_only_root", False)
    if not isinstance(read_only_root, bool):
        raise JobSpecError(f"{where}.read_only_root: must be true or false, got {read_only_root!r}")
    if read_only_root and not image:
        raise JobSpecError(f"{where}.read_only_root: needs an image")
    command = raw.get("command", "" if image else None)
    if not isinstance(command, str) or not (command.strip() or image):
        raise JobSpecError(f"{where}.command: must be a non-empty string")
    cpus = _number(raw, "cpus", where, 0.1, 0.0)
    mem = _number(raw, "mem", where, 32.0, 0.0)
    if cpus <= 0 and mem <= 0:
        raise JobSpecError(f"{where}: needs cpus > 0 or mem > 0")
    count = raw.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise JobSpecError(f"{where}.count: must be an integer >= 1, got {count!r}")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in env.items()
    ):
        raise JobSpecError(f"{where}.env: must be a table of strings")
    network = raw.get("network", "host")
    if network not in ("host", "none"):
        raise JobSpecError(f"{where}.network: must be 'host' or 'none', got {network!r}")
    return TaskGroup(
        network=network,
        user=parse_user(raw.get("user"), f"{where}.user"),
        name=name,
        command=command,
        cpus=cpus,
        mem=mem,
        disk=_number(raw, "disk", where, 0.0, 0.0),
        count=count,
        env={k: str(v) for k, v in env.items()},
        kill_grace_s=_number(raw, "kill_grace_s", where, 3.0, 0.0),
        image=image,
        pull_policy=pull_policy,
        read_only_root=read_only_root,
        volumes=_parse_volumes(raw.get("volumes", []), f"{where}.volumes"),
        policy=parse_policy(raw, where, JobSpecError),
    )


def _parse_volumes(raw: Any, where: str) -> tuple[Volume, ...]:
    if not isinstance(raw, list):
        raise JobSpecError(f"{where}: must be an array of tables ([[tasks.volumes]])")
    out = []
    for i, v in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(v, dict):
            raise JobSpecError(f"{at}: must be a table")
        unknown = set(v) - {"container_path", "host_path", "read_only", "tmpfs_size_mib"}
        if unknown:
            raise JobSpecError(f"{at}: unknown key(s) {sorted(unknown)}")
        path, host = v.get("container_path"), v.get("host_path", "")
        if not isinstance(path, str) or not path:
            raise JobSpecError(f"{at}.container_path: must be a non-empty string")
        if not isinstance(host, str) or (host and not host.startswith("/")):
            raise JobSpecError(f"{at}.host_path: must be an absolute path, got {host!r}")
        read_only = v.get("read_only", False)
        if not isinstance(read_only, bool):
            raise JobSpecError(f"{at}.read_only: must be true or false, got {read_only!r}")
        size_mib = _number(v, "tmpfs_size_mib", at, 0.0, 0.0)
        if host and size_mib:
            raise JobSpecError(f"{at}.tmpfs_size_mib: only for tmpfs volumes (without host_path)")
        out.append(Volume(path, host, read_only, int(size_mib * (1 << 20))))
    return tuple(out)


def parse_user(value: Any, where: str = "user") -> tuple[int, int] | None:
    """``"65534:65534"``, ``"1000"`` (group = user) or ``65534`` -> (uid, gid)."""
    if value is None:
        return None
    text = "" if isinstance(value, bool) else str(value)
    uid, sep, gid = text.partition(":")
    if not uid.isdigit() or (sep and not gid.isdigit()):
        raise JobSpecError(f"{where}: must be UID or UID:GID with numbers, got {value!r}")
    ids = (int(uid), int(gid) if sep else int(uid))
    if max(ids) > 2**32 - 2:
        raise JobSpecError(f"{where}: ids must be below 4294967295, got {value!r}")
    return ids
