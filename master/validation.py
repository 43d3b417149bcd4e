"""Pure checks of incoming messages (Mesos' validation.cpp is the model).

Each function returns a list of sentences naming the field path and value;
an empty list means valid. Servicers call these before anything touches state.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from corral.codec import resources_from_proto
from corral.proto import messages_pb2 as pb
from corral.resources import ResourceError, Resources, validate_role

_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")
_ID_RULE = "1-200 characters of [A-Za-z0-9_.:@-]"


def validate_id(value: str, field: str) -> list[str]:
    if not value:
        return [f"{field}: must not be empty"]
    if not _ID_RE.match(value):
        return [f"{field}: must be {_ID_RULE}, got {value!r}"]
    return []


def validate_framework_info(info: pb.FrameworkInfo) -> list[str]:
    errors: list[str] = []
    if not info.name.strip():
        errors.append("framework_info.name: must not be empty")
    if info.id:
        errors += validate_id(info.id, "framework_info.id")
    if not info.failover_timeout_s >= 0:  # also rejects NaN
        errors.append(f"framework_info.failover_timeout_s: must be >= 0, got {info.failover_timeout_s}")
    for i, role in enumerate(info.roles):
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
    if info.id:
        errors += validate_id(info.id, "agent_info.id")
    total = Resources()
    try:
        total = resources_from_proto(info.resources, "agent_info.resources")
    except ResourceError as e:
        errors.append(str(e))
    names = [a.name for a in info.attributes]
    for i, name in enumerate(names):
        if not name:
            errors.append(f"agent_info.attributes[{i}].name: must not be empty")
        elif names.count(name) > 1:
            errors.append(f"agent_info.attributes[{i}].name: {name!r} given more than once")
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
    if not _IMAGE_REF_RE.match(image) or ".." in image or image.endswith((":", "/")):
        return [
            f"{where}.image: must be NAME[:TAG] (letters, digits, '._/-') or the absolute path "
            f"of an image tarball on the agent, got {image!r}"
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
    if container.hostname and not _HOSTNAME_RE.match(container.hostname):
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


def validate_task(
    task: pb.TaskInfo,
    where: str,
    available: Resources,
    active_task_ids: Collection[str],
) -> tuple[list[str], Resources]:
    """Check one task of a LAUNCH against what its offers still hold.

    ``where`` is the field path, e.g. ``accept.operations[0].launch.task_infos[2]``.
    Returns the errors and the task's resources.
    """
    errors = validate_id(task.task_id, f"{where}.task_id")
    if task.task_id in active_task_ids:
        errors.append(f"{where}.task_id: {task.task_id!r} is already in use by a live task")
    cmd = task.command
    # With an image, no command means the image's Entrypoint and Cmd.
    if cmd.shell and not cmd.value.strip() and not task.container.image:
        errors.append(f"{where}.command.value: must not be empty")
    if not cmd.shell and not (cmd.value or cmd.arguments) and not task.container.image:
        errors.append(f"{where}.command: needs a value or arguments")
    if not task.kill_policy.grace_period_s >= 0:  # also rejects NaN
        errors.append(
            f"{where}.kill_policy.grace_period_s: must be >= 0, got {task.kill_policy.grace_period_s}"
        )
    errors += _validate_container(task.container, f"{where}.container")
    if task.HasField("health_check"):
        errors += validate_health_check(task.health_check, f"{where}.health_check")
    try:
        wanted = resources_from_proto(task.resources, f"{where}.resources")
    except ResourceError as e:
        return [*errors, str(e)], Resources()
    if wanted.scalar("cpus") <= 0 and wanted.scalar("mem") <= 0:
        errors.append(f"{where}.resources: must ask for some cpus or mem")
    for name, role in wanted:
        if name not in available.names():
            errors.append(f"{where}.resources.{name}: unknown resource, the offer has none")
            continue
        if (name, role) in wanted.scalars:
            have = available.scalars.get((name, role), 0)
            want = wanted.scalars[(name, role)]
            if want > have:
                errors.append(
                    f"{where}.resources.{name}: asks for {want / 1000:g} "
                    f"but the offer has {have / 1000:g} left"
                )
        if (name, role) in wanted.sets:
            have_set = available.sets.get((name, role), frozenset())
            missing = wanted.sets[(name, role)] - have_set
            if missing:
                errors.append(
                    f"{where}.resources.{name}: {sorted(missing)} not in the offer "
                    f"({sorted(have_set) or 'none'} left)"
                )
        if (name, role) in wanted.ranges:
            have_rs = available.ranges.get((name, role))
            want_rs = wanted.ranges[(name, role)]
            if have_rs is None or not have_rs.contains(want_rs):
                errors.append(
                    f"{where}.resources.{name}: {want_rs.format()} is not in the offer "
                    f"({have_rs.format() if have_rs else 'none'} left)"
                )
    return errors, wanted
