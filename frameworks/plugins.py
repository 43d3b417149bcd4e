"""Framework plugins, found through the entry-point group ``corral.frameworks``.

A package registers a framework in its ``pyproject.toml``::

    [project.entry-points."corral.frameworks"]
    hello = "corral_hello:plugin"

The entry point names either a :class:`FrameworkPlugin` (full control: its
``run`` gets a :class:`PluginContext` and returns an exit code) or a
:class:`~corral.frameworks.Scheduler` subclass, which corral runs with a
:class:`~corral.frameworks.SchedulerDriver` until the scheduler calls
``driver.stop()`` and exits with the ``exit_code`` it passed (``driver.stop(exit_code=1)``;
0 by default); the keys of the ``--config`` file's ``[scheduler]`` table are
passed to its constructor as keyword arguments.

``corral framework list`` shows what is installed; ``corral framework run NAME``
runs one.
"""

from __future__ import annotations

import inspect
import tomllib
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from corral.errors import CorralError
from corral.frameworks.driver import SchedulerDriver
from corral.frameworks.scheduler import Scheduler
from corral.transport import Credentials

GROUP = "corral.frameworks"


class PluginError(CorralError):
    """A plugin is missing, cannot be loaded, or its configuration is wrong."""


@dataclass(frozen=True)
class PluginContext:
    """What ``corral framework run`` hands a plugin."""

    name: str
    #: the master to subscribe to (HOST:PORT or a zk:// URL)
    master: str
    #: the ``--config`` file's contents (empty without one)
    config: Mapping[str, Any] = field(default_factory=dict)
    #: where the plugin may keep state (``$CORRAL_HOME/frameworks/NAME``), created on demand
    state_dir: Path = Path(".")
    #: what to call the master with (``--tls-*``); None: plaintext
    credentials: Credentials | None = None
    #: the master's ACL policy file (``--acls``), for a framework that serves an API
    acls: str | None = None


@dataclass(frozen=True)
class FrameworkPlugin:
    """A framework that runs itself: ``run`` returns the process's exit code."""

    name: str
    description: str
    run: Callable[[PluginContext], Coroutine[Any, Any, int]]


@dataclass(frozen=True)
class PluginInfo:
    """One installed entry point, before it is loaded."""

    name: str
    target: str
    distribution: str
    version: str
    entry_point: metadata.EntryPoint

    def load(self) -> FrameworkPlugin:
        """Import the target and wrap a Scheduler subclass into a plugin."""
        try:
            obj = self.entry_point.load()
        except Exception as e:
            raise PluginError(f"framework {self.name!r} ({self.target}) failed to import: {e!r}") from e
        return as_plugin(self.name, obj)

    def description(self) -> str:
        """The plugin's one-line description (loads it; '' if it cannot load)."""
        try:
            return self.load().description
        except PluginError as e:
            return f"(broken: {e})"


def discover() -> list[PluginInfo]:
    """Every installed framework plugin, sorted by name (first wins on a clash)."""
    found: dict[str, PluginInfo] = {}
    for ep in metadata.entry_points(group=GROUP):
        if ep.name in found:
            continue
        dist = ep.dist
        found[ep.name] = PluginInfo(
            name=ep.name,
            target=ep.value,
            distribution=dist.metadata["Name"] if dist is not None else "",
            version=dist.version if dist is not None else "",
            entry_point=ep,
        )
    return [found[n] for n in sorted(found)]


def find(name: str) -> PluginInfo:
    """The plugin called ``name``; :class:`PluginError` naming those installed if none."""
    plugins = discover()
    for info in plugins:
        if info.name == name:
            return info
    names = ", ".join(p.name for p in plugins) or "none"
    raise PluginError(f"no framework plugin named {name!r} (installed: {names})")


def as_plugin(name: str, obj: object) -> FrameworkPlugin:
    """Accept a FrameworkPlugin, or a Scheduler subclass to run with a driver."""
    if isinstance(obj, FrameworkPlugin):
        return obj
    if isinstance(obj, type) and issubclass(obj, Scheduler):
        scheduler_cls: type[Scheduler] = obj
        doc = inspect.getdoc(scheduler_cls) or ""
        description = doc.splitlines()[0] if doc else scheduler_cls.__name__

        async def run(ctx: PluginContext) -> int:
            return await run_scheduler_class(scheduler_cls, ctx)

        return FrameworkPlugin(name=name, description=description, run=run)
    raise PluginError(
        f"framework {name!r}: the entry point must name a FrameworkPlugin or a Scheduler subclass, "
        f"got {type(obj).__name__}"
    )


async def run_scheduler_class(cls: type[Scheduler], ctx: PluginContext) -> int:
    """Run ``cls(**config["scheduler"])`` until it stops the driver; returns the
    ``exit_code`` it stopped with (0 by default). Raises what ``driver.run()`` raises.

    The config's ``[framework]`` table may set ``name``, ``roles``,
    ``failover_timeout_s`` and ``connect_timeout_s`` of the driver.
    """
    kwargs = dict(ctx.config.get("scheduler", {}))
    fw = dict(ctx.config.get("framework", {}))
    unknown = set(ctx.config) - {"scheduler", "framework"}
    if unknown:
        raise PluginError(f"config: unknown table(s) {sorted(unknown)}; allowed: ['framework', 'scheduler']")
    allowed = ("name", "roles", "failover_timeout_s", "connect_timeout_s")
    unknown = set(fw) - set(allowed)
    if unknown:
        raise PluginError(
            f"config.framework: unknown key(s) {sorted(unknown)}; allowed: {', '.join(allowed)}"
        )
    try:
        scheduler = cls(**kwargs)
    except TypeError as e:
        raise PluginError(f"config.scheduler: {cls.__name__} does not take these settings: {e}") from None
    driver = SchedulerDriver(
        scheduler,
        name=str(fw.get("name", ctx.name)),
        master=ctx.master,
        roles=tuple(fw.get("roles", ("*",))),
        failover_timeout_s=float(fw.get("failover_timeout_s", 60.0)),
        connect_timeout_s=float(fw.get("connect_timeout_s", 60.0)),
        credentials=ctx.credentials,
    )
    await driver.run()
    return driver.exit_code


def load_config(path: Path | None) -> dict[str, Any]:
    """A plugin's TOML configuration (empty without a path)."""
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise PluginError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise PluginError(f"{path}: not valid TOML: {e}") from None
