"""``corral service deploy --wait``: follow a deployment until it is healthy
or has failed, and say which with the exit code.

    0   the deployed version runs with every instance healthy
    1   it failed: rolled back to the stable version, failed as often as
        ``update.rollback_after_failures`` with nothing to roll back to
        (the service keeps retrying it), or not healthy by ``--timeout``
    130 Ctrl-C detached: the deployment goes on in the service framework

:func:`outcome` is a pure function of the service's view; :func:`wait` the
poll around it, printing a line whenever the state, health or message
changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from corral.cli import exit as exit_codes
from corral.cli.common import console, err_console

EXIT_DETACHED = exit_codes.INTERRUPTED
#: how long a deployment must stay healthy before --wait calls it healthy
HEALTHY_FOR_S = 3.0


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def outcome(view: Mapping[str, Any], version: int, failure_limit: int) -> Outcome | None:
    """How the deployment of ``version`` ended (``failure_limit``: its
    ``update.rollback_after_failures``), or None while it goes on."""
    state, now_version = str(view["state"]), int(view["version"])
    if state == "RUNNING" and now_version == version and view["healthy"] >= view["instances"]:
        return Outcome(
            True,
            f"v{version} is healthy: {view['healthy']}/{view['instances']} instances ({view['message']})",
        )
    if state == "RUNNING" and now_version != version:
        return Outcome(False, f"v{version} failed and was rolled back: {view['message']}")
    if state == "DELETING":
        return Outcome(False, f"the service is being removed: {view['message']}")
    if (
        state == "DEPLOYING"
        and now_version == version
        and not view.get("stable_version")
        and int(view.get("deploy_failures", 0)) >= failure_limit
    ):
        return Outcome(
            False,
            f"v{version} failed {view['deploy_failures']} times and there is no stable version to roll "
            f"back to (the service keeps retrying): {view['message']}",
        )
    return None


def _line(view: Mapping[str, Any]) -> str:
    line = f"{view['state'].lower()} v{view['version']}: {view['healthy']}/{view['instances']} healthy"
    if view.get("message"):
        line += f"; {view['message']}"
    if view.get("unschedulable"):
        line += f"; unschedulable: {view['unschedulable']}"
    return line


def wait(
    fetch: Callable[[], dict[str, Any]],
    name: str,
    version: int,
    failure_limit: int,
    timeout_s: float,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    healthy_for_s: float = 0.0,
) -> int:
    """Poll until :func:`outcome` says (a healthy verdict must hold for
    ``healthy_for_s``), ``timeout_s`` passes (exit 1) or Ctrl-C detaches
    (130); a line per change."""
    deadline = clock() + timeout_s
    last = ""
    healthy_since: float | None = None
    try:
        while True:
            view = fetch()
            line = _line(view)
            if line != last:
                console.print(line, highlight=False, markup=False, soft_wrap=True)
                last = line
            end = outcome(view, version, failure_limit)
            if end is not None and end.ok:
                # Healthy for a while, not at one glance: a version with no
                # health check counts as healthy the moment it runs, even one
                # that crashes a second later (Nomad's min_healthy_time).
                healthy_since = healthy_since if healthy_since is not None else clock()
                if clock() - healthy_since < healthy_for_s:
                    end = None
            else:
                healthy_since = None
            if end is not None:
                out = console if end.ok else err_console
                out.print(f"service {name}: {end.message}", highlight=False, markup=False, soft_wrap=True)
                return exit_codes.OK if end.ok else exit_codes.FAILED
            if clock() >= deadline:
                err_console.print(
                    f"service {name}: v{version} not healthy after {timeout_s:g}s ({line}); the deployment "
                    f"goes on: `corral service status {name}`",
                    highlight=False,
                    markup=False,
                    soft_wrap=True,
                )
                return exit_codes.FAILED
            time.sleep(poll_s)
    except KeyboardInterrupt:
        err_console.print(
            f"detached: the deployment of {name} v{version} goes on; "
            f"see it with `corral service status {name}`",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        return EXIT_DETACHED
