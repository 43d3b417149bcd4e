"""Whether a task to launch fits what its offers still hold: the part of
``master/validation.py``'s ``validate_task`` that needs the master's state.

Pure: Resources in, sentences naming the field path out.
"""

from __future__ import annotations

from collections.abc import Collection

from corral.master.core.domain import TaskCheck
from corral.resources import Resources


def task_fits(
    task_id: str,
    check: TaskCheck,
    wanted: Resources,
    where: str,
    available: Resources,
    active_task_ids: Collection[str],
) -> tuple[list[str], Resources]:
    """The errors of one task of a LAUNCH (the edge's ``check`` among them,
    in validate_task's order) and its resources."""
    errors = list(check.id_problems)
    if task_id in active_task_ids:
        errors.append(f"{where}.task_id: {task_id!r} is already in use by a live task")
    errors += check.spec_problems
    if check.resource_problems:
        return [*errors, *check.resource_problems], Resources()
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
