"""Role names as the allocator takes them: which are valid, which roles a
request names, and which role an allocation is charged to. Pure."""

from __future__ import annotations

from corral.master.allocator.model import DEFAULT_ROLE, AllocatorError, FrameworkState
from corral.master.allocator.sorter import is_within
from corral.resources import ResourceError, Resources, validate_role


def check_role(role: str, what: str) -> None:
    """Raise :class:`AllocatorError` (starting with ``what``) unless ``role``
    is ``*`` or a path of valid names without ``.``, ``..`` or ``*``."""
    if not isinstance(role, str) or not role:
        raise AllocatorError(f"{what}: a role must be a non-empty name, got {role!r}")
    if role == DEFAULT_ROLE:
        return
    try:
        validate_role(role)
    except ResourceError as e:
        raise AllocatorError(f"{what}: {e}") from None
    if "*" in role or any(part in (".", "..") for part in role.split("/")):
        raise AllocatorError(f"{what}: role {role!r}: '.', '..' and '*' are not role names")


def check_roles_of(
    fw: FrameworkState, framework_id: str, roles: tuple[str, ...], what: str
) -> tuple[str, ...]:
    """The roles a suppress or revive is about (none named: all the framework's);
    a role it is not subscribed to is refused."""
    unknown = [r for r in roles if r not in fw.roles]
    if unknown:
        raise AllocatorError(
            f"{what}.roles: framework {framework_id} is not subscribed to role(s) "
            f"{', '.join(repr(r) for r in unknown)} (its roles: {', '.join(fw.roles)})"
        )
    return roles or fw.roles


def role_for(fw: FrameworkState, res: Resources, role: str | None) -> str:
    """The role an allocation is charged to: the one given if the
    framework has it, else the first whose reservations it holds, else its first."""
    if role is not None and role in fw.roles:
        return role
    reserved = {r for r in res.roles() if r}
    for candidate in fw.roles:
        if reserved and all(is_within(candidate, r) for r in reserved):
            return candidate
    return fw.roles[0]
