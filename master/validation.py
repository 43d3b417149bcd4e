"""Pure checks of incoming messages (Mesos' validation.cpp is the model).

Each function returns a list of sentences naming the field path and value;
an empty list means valid. Servicers call these before anything touches state.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from corral.codec import resources_from_proto
from corral.image_refs import ImageRefError, is_remote_ref, parse_remote_ref
from corral.master.core.domain import TaskCheck
from corral.master.core.fit import task_fits
from corral.proto import messages_pb2 as pb
from corral.resources import ResourceError, Resources, validate_role

_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")
_ID_RULE = "1-200 characters of [A-Za-z0-9_.:@-]"

# -- bounds -------------------------------------------------------------------
# Every number and string a peer controls has a cap, so no message can make
# the master (or an agent) do unbounded work or hold a task for ever. The
# caps are generous for honest use and documented in docs/architecture.md
# ("Limits"); Mesos' validation.cpp and Nomad's job validation are the models.

#: SIGTERM to SIGKILL: Mesos and Kubernetes have no hard cap, but an infinite
#: grace makes a task unkillable; an hour covers any orderly shutdown.
MAX_KILL_GRACE_S = 3600.0
#: decline/accept filters: Mesos treats refuse_seconds as a Duration (about
#: 292 years); a year is longer than any real filter and keeps sums finite.
MAX_REFUSE_S = 365 * 86400.0
#: how long a disconnected framework keeps its tasks (Marathon uses a week).
MAX_FAILOVER_TIMEOUT_S = 365 * 86400.0
#: one command string: Linux' MAX_ARG_STRLEN (32 pages), which execve enforces anyway.
MAX_COMMAND_BYTES = 128 * 1024
MAX_ARGUMENTS = 4096
#: argv or environment in total: a quarter of the usual 2 MiB ARG_MAX each.
MAX_ARGV_BYTES = 512 * 1024
MAX_ENVIRONMENT = 1024
MAX_ENVIRONMENT_BYTES = 512 * 1024
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
#: names people read (framework and task names, hostnames, attributes, labels)
MAX_NAME = 255
MAX_LABELS = 64
MAX_LABEL_VALUE = 4096
MAX_ATTRIBUTES = 128
MAX_ROLES = 64
MAX_USER = 32  # Linux' LOGIN_NAME_MAX minus the NUL
#: resources in one message, and ranges or set items in one resource
MAX_RESOURCES = 256
MAX_RESOURCE_ITEMS = 1024
#: a status update's free text (the agent truncates stderr to its tail anyway)
MAX_STATUS_MESSAGE = 64 * 1024
#: items in one call that are not tasks (an agent's registration)
MAX_ITEMS_PER_CALL = 100_000
#: acknowledgements or reconciliations in one framework call: each costs the
#: master's loop work, and one call of 100,000 held it 1.7 s (security
#: review); a framework with more tasks sends several calls, which the rate
#: limits then pace
MAX_FRAMEWORK_ITEMS_PER_CALL = 10_000
MAX_OFFERS_PER_CALL = 1000


def printable(value: str, field: str, max_len: int = MAX_NAME, *, required: bool = False) -> list[str]:
    """A string people read and logs print: printable characters, capped."""
    if not value:
        return [f"{field}: must not be empty"] if required else []
    if len(value) > max_len:
        return [f"{field}: must be at most {max_len} characters, got {len(value)}"]
    if not value.isprintable():
        return [f"{field}: must be printable characters only, got {value!r}"]
    return []


def duration(value: float, field: str, max_s: float) -> list[str]:
    """Seconds: finite, >= 0, at most ``max_s`` (NaN fails every comparison)."""
    if not 0 <= value <= max_s:
        return [f"{field}: must be finite, >= 0 and <= {max_s:.0f} seconds, got {value}"]
    return []


def count(items: Sequence[object] | Collection[object], field: str, cap: int) -> list[str]:
    if len(items) > cap:
        return [f"{field}: at most {cap} allowed, got {len(items)}"]
    return []


def validate_resource_sizes(items: Sequence[pb.Resource], field: str) -> list[str]:
    """Bound the work resources_from_proto will do before it does it."""
    if len(items) > MAX_RESOURCES:
        return [f"{field}: at most {MAX_RESOURCES} resources, got {len(items)}"]
    errors = []
    for i, item in enumerate(items):
        n = len(item.ranges.range) + len(item.set.item)
        if n > MAX_RESOURCE_ITEMS:
            errors.append(f"{field}[{i}]: at most {MAX_RESOURCE_ITEMS} ranges or set items, got {n}")
        errors += [
            e for j, x in enumerate(item.set.item) for e in printable(x, f"{field}[{i}].set.item[{j}]")
        ]
    return errors


def validate_command(cmd: pb.CommandInfo, where: str) -> list[str]:
    """Sizes and characters of a command: what execve would refuse, refused early."""
    errors = []
    if len(cmd.value.encode()) > MAX_COMMAND_BYTES:
        errors.append(f"{where}.value: at most {MAX_COMMAND_BYTES} bytes, got {len(cmd.value.encode())}")
    if "\0" in cmd.value:
        errors.append(f"{where}.value: must not contain NUL")
    errors += count(cmd.arguments, f"{where}.arguments", MAX_ARGUMENTS)
    argv_bytes = sum(len(a.encode()) + 1 for a in cmd.arguments)
    if argv_bytes > MAX_ARGV_BYTES:
        errors.append(f"{where}.arguments: at most {MAX_ARGV_BYTES} bytes in all, got {argv_bytes}")
    if any("\0" in a for a in cmd.arguments):
        errors.append(f"{where}.arguments: must not contain NUL")
    env = cmd.environment
    errors += count(env, f"{where}.environment", MAX_ENVIRONMENT)
    env_bytes = sum(len(k.encode()) + len(v.encode()) + 2 for k, v in env.items())
    if env_bytes > MAX_ENVIRONMENT_BYTES:
        errors.append(f"{where}.environment: at most {MAX_ENVIRONMENT_BYTES} bytes in all, got {env_bytes}")
    for name in sorted(env)[:MAX_ENVIRONMENT]:
        if not _ENV_NAME_RE.fullmatch(name):
            errors.append(f"{where}.environment: name {name[:64]!r} must be [A-Za-z_][A-Za-z0-9_]*")
        elif "\0" in env[name]:
            errors.append(f"{where}.environment[{name}]: must not contain NUL")
    errors += printable(cmd.user, f"{where}.user", MAX_USER)
    return errors


def validate_labels(labels: Sequence[pb.Label], where: str) -> list[str]:
    errors = count(labels, where, MAX_LABELS)
    for i, label in enumerate(labels[:MAX_LABELS]):
        errors += printable(label.key, f"{where}[{i}].key", required=True)
        errors += printable(label.value, f"{where}[{i}].value", MAX_LABEL_VALUE)
    return errors


def validate_refuse_seconds(filters: pb.Filters, where: str) -> list[str]:
    if not filters.HasField("refuse_seconds"):
        return []
    return duration(filters.refuse_seconds, f"{where}.refuse_seconds", MAX_REFUSE_S)


def validate_id(value: str, field: str) -> list[str]:
    if not value:
        return [f"{field}: must not be empty"]
    if not _ID_RE.fullmatch(value):
        return [f"{field}: must be {_ID_RULE}, got {value!r}"]
    return []


def validate_framework_info(info: pb.FrameworkInfo) -> list[str]:
    errors: list[str] = []
    if not info.name.strip():
        errors.append("framework_info.name: must not be empty")
    errors += printable(info.name, "framework_info.name")
    errors += printable(info.user, "framework_info.user", MAX_USER)
    errors += printable(info.principal, "framework_info.principal")
    errors += printable(info.hostname, "framework_info.hostname")
    if info.id:
        errors += validate_id(info.id, "framework_info.id")
    errors += duration(info.failover_timeout_s, "framework_info.failover_timeout_s", MAX_FAILOVER_TIMEOUT_S)
    known = pb.FrameworkInfo.Capability.values()
    errors += [
        f"framework_info.capabilities[{i}]: unknown capability {c}"
        for i, c in enumerate(info.capabilities)
        if c not in known
    ]
    errors += count(info.roles, "framework_info.roles", MAX_ROLES)
    for i, role in enumerate(info.roles[:MAX_ROLES]):
        if len(role) > MAX_NAME:
            errors.append(f"framework_info.roles[{i}]: at most {MAX_NAME} characters, got {len(role)}")
            continue
        try:
            validate_role(role)
        except ResourceError as e:
            errors.append(f"framework_info.roles[{i}]: {e}")
            continue
        if not role:
            errors.append(f"framework_info.roles[{i}]: must not be empty ('*' is the default role)")
        elif role != "*" and ("*" in role or any(p in (".", "..") for p in role.split("/"))):
            errors.append(f"framework_info.roles[{i}]: role {role!r}: '.', '..' and '*' are not role names")
    if len(set(info.roles)) != len(info.roles):
        errors.append("framework_info.roles: a role is given more than once")
    return errors


def validate_agent_info(info: pb.AgentInfo) -> tuple[list[str], Resources]:
    errors: list[str] = []
    if not info.hostname:
        errors.append("agent_info.hostname: must not be empty")
    errors += printable(info.hostname, "agent_info.hostname")
    errors += printable(info.version, "agent_info.version")
    if len(info.work_dir) > 4096 or "\0" in info.work_dir:
        errors.append("agent_info.work_dir: must be a path of at most 4096 characters without NUL")
    if info.id:
        errors += validate_id(info.id, "agent_info.id")
    total = Resources()
    sizes = validate_resource_sizes(info.resources, "agent_info.resources")
    errors += sizes
    try:
        if not sizes:
            total = resources_from_proto(info.resources, "agent_info.resources")
    except ResourceError as e:
        errors.append(str(e))
    errors += count(info.attributes, "agent_info.attributes", MAX_ATTRIBUTES)
    seen: set[str] = set()
    for i, attribute in enumerate(info.attributes[:MAX_ATTRIBUTES]):
        name = attribute.name
        if not name:
            errors.append(f"agent_info.attributes[{i}].name: must not be empty")
        elif name in seen:
            errors.append(f"agent_info.attributes[{i}].name: {name!r} given more than once")
        errors += printable(name, f"agent_info.attributes[{i}].name")
        errors += printable(attribute.value, f"agent_info.attributes[{i}].value", MAX_LABEL_VALUE)
        seen.add(name)
    return errors, total


_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


_IMAGE_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,254}$")
_RESERVED_PATHS = ("/proc", "/dev", "/sys")
_MAX_TMPFS_BYTES = 1 << 40
_MAX_VOLUMES = 64


def _validate_image(image: str, where: str) -> list[str]:
    if image.startswith("/"):
        if "\0" in image or ".." in image.split("/") or len(image) > 4096:
            return [f"{where}.image: a tarball path must be absolute, without '..' or NUL, got {image!r}"]
        return []
    if is_remote_ref(image):
        try:
            parse_remote_ref(image)
        except ImageRefError as e:
            return [f"{where}.image: {e}"]
        return []
    if not _IMAGE_REF_RE.fullmatch(image) or ".." in image or image.endswith((":", "/")):
        return [
            f"{where}.image: must be NAME[:TAG] (letters, digits, '._/-'), HOST[:PORT]/REPO[:TAG|@DIGEST] "
            f"of a registry, or the absolute path of an image tarball on the agent, got {image!r}"
        ]
    return []


def _validate_volume(volume: pb.Volume, where: str) -> list[str]:
    path = volume.container_path
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not path or "\0" in path:
        return [f"{where}.container_path: must be a non-empty path without NUL"]
    if ".." in parts:
        return [f"{where}.container_path: must not contain '..', got {path!r}"]
    if not parts:
        return [f"{where}.container_path: must not be the root, got {path!r}"]
    canonical = "/" + "/".join(parts)
    if path.startswith("/") and any(canonical == r or canonical.startswith(r + "/") for r in _RESERVED_PATHS):
        return [f"{where}.container_path: {canonical} is managed by the containerizer"]
    if volume.host_path:
        if not volume.host_path.startswith("/") or "\0" in volume.host_path:
            return [f"{where}.host_path: must be an absolute path, got {volume.host_path!r}"]
        if volume.tmpfs_size_bytes:
            return [f"{where}.tmpfs_size_bytes: only for tmpfs volumes (without host_path)"]
    elif volume.tmpfs_size_bytes > _MAX_TMPFS_BYTES:
        size = volume.tmpfs_size_bytes
        return [f"{where}.tmpfs_size_bytes: must be at most {_MAX_TMPFS_BYTES}, got {size}"]
    return []


def _validate_container(container: pb.ContainerInfo, where: str) -> list[str]:
    errors = []
    if container.image:
        errors += _validate_image(container.image, where)
    elif container.read_only_root:
        errors.append(f"{where}.read_only_root: needs an image")
    if container.pull_policy not in pb.ContainerInfo.PullPolicy.values():
        errors.append(f"{where}.pull_policy: unknown value {container.pull_policy}")
    elif container.pull_policy and not is_remote_ref(container.image):
        errors.append(f"{where}.pull_policy: only for a registry image (HOST[:PORT]/REPO[:TAG|@DIGEST])")
    if len(container.volumes) > _MAX_VOLUMES:
        errors.append(f"{where}.volumes: at most {_MAX_VOLUMES}, got {len(container.volumes)}")
    seen: set[str] = set()
    for i, volume in enumerate(container.volumes[:_MAX_VOLUMES]):
        errors += _validate_volume(volume, f"{where}.volumes[{i}]")
        key = volume.container_path.rstrip("/")
        if key in seen:
            errors.append(f"{where}.volumes[{i}].container_path: {volume.container_path!r} is used twice")
        seen.add(key)
    if container.network == pb.ContainerInfo.BRIDGE:
        errors.append(f"{where}.network: BRIDGE is not supported yet; use HOST or NONE")
    elif container.network not in pb.ContainerInfo.NetworkMode.values():
        errors.append(f"{where}.network: unknown mode {container.network}")
    if container.hostname and not _HOSTNAME_RE.fullmatch(container.hostname):
        errors.append(f"{where}.hostname: must be 1-63 letters, digits or '-', got {container.hostname!r}")
    if container.HasField("gid") and not container.HasField("uid"):
        errors.append(f"{where}.gid: given without uid")
    return errors


def validate_health_check(check: pb.HealthCheck, where: str) -> list[str]:
    """A task's health check: a known type with what that type needs, sane times."""
    errors = []
    kind = check.type
    if kind not in (pb.HealthCheck.COMMAND, pb.HealthCheck.TCP, pb.HealthCheck.HTTP):
        errors.append(f"{where}.type: must be COMMAND, TCP or HTTP, got {kind}")
    if kind == pb.HealthCheck.COMMAND:
        cmd = check.command
        if (cmd.shell and not cmd.value.strip()) or (not cmd.shell and not (cmd.value or cmd.arguments)):
            errors.append(f"{where}.command: a COMMAND check needs a command")
        errors += validate_command(cmd, f"{where}.command")
        if cmd.user:
            # The agent runs a check as its task's user, in its container: a
            # check naming a user would be a way around the run_task ACL.
            errors.append(
                f"{where}.command.user: a health check runs as its task's user; "
                f"it cannot name one, got {cmd.user!r}"
            )
    elif kind in (pb.HealthCheck.TCP, pb.HealthCheck.HTTP) and not 1 <= check.port <= 65535:
        errors.append(f"{where}.port: must be 1-65535 for a TCP or HTTP check, got {check.port}")
    if check.path and (kind != pb.HealthCheck.HTTP or not check.path.startswith("/")):
        errors.append(f"{where}.path: only for HTTP checks, and must start with '/', got {check.path!r}")
    for name in ("interval_s", "timeout_s", "grace_period_s"):
        value = getattr(check, name)
        if not 0 <= value <= 86400:  # also rejects NaN
            errors.append(f"{where}.{name}: must be 0-86400 seconds (0: the default), got {value}")
    if check.consecutive_failures > 1000:
        errors.append(f"{where}.consecutive_failures: must be at most 1000, got {check.consecutive_failures}")
    return errors


def check_task(task: pb.TaskInfo, where: str) -> tuple[TaskCheck, Resources]:
    """What can be said of one task of a LAUNCH without the master's state,
    and its resources (empty if they do not parse). ``where`` is the field
    path, e.g. ``accept.operations[0].launch.task_infos[2]``."""
    ids = validate_id(task.task_id, f"{where}.task_id")
    errors: list[str] = []
    cmd = task.command
    # With an image, no command means the image's Entrypoint and Cmd.
    if cmd.shell and not cmd.value.strip() and not task.container.image:
        errors.append(f"{where}.command.value: must not be empty")
    if not cmd.shell and not (cmd.value or cmd.arguments) and not task.container.image:
        errors.append(f"{where}.command: needs a value or arguments")
    errors += validate_command(cmd, f"{where}.command")
    errors += printable(task.name, f"{where}.name")
    errors += validate_labels(task.labels, f"{where}.labels")
    # An infinite (or NaN) grace would make the task unkillable (issue 14).
    errors += duration(
        task.kill_policy.grace_period_s, f"{where}.kill_policy.grace_period_s", MAX_KILL_GRACE_S
    )
    errors += _validate_container(task.container, f"{where}.container")
    if task.HasField("health_check"):
        errors += validate_health_check(task.health_check, f"{where}.health_check")
    sizes = validate_resource_sizes(task.resources, f"{where}.resources")
    if sizes:
        return TaskCheck(tuple(ids), tuple(errors), tuple(sizes)), Resources()
    try:
        wanted = resources_from_proto(task.resources, f"{where}.resources")
    except ResourceError as e:
        return TaskCheck(tuple(ids), tuple(errors), (str(e),)), Resources()
    if wanted.scalar("mem") <= 0 and not wanted.is_empty():
        # Without it the agent could only give the task its whole memory,
        # which the allocator never counted: one task could starve the node.
        errors.append(f"{where}.resources.mem: required (MiB), got none")
    return TaskCheck(tuple(ids), tuple(errors)), wanted


def validate_task(
    task: pb.TaskInfo,
    where: str,
    available: Resources,
    active_task_ids: Collection[str],
) -> tuple[list[str], Resources]:
    """Check one task of a LAUNCH against what its offers still hold.

    ``where`` is the field path, e.g. ``accept.operations[0].launch.task_infos[2]``.
    Returns the errors and the task's resources. The master checks the two
    halves apart: :func:`check_task` at the edge, ``task_fits`` in its core.
    """
    check, wanted = check_task(task, where)
    return task_fits(task.task_id, check, wanted, where, available, active_task_ids)


def optional_id(value: str, field: str) -> list[str]:
    return validate_id(value, field) if value else []
