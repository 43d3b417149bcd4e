"""Runs the agent core's Launch, Kill and Follow effects: one asyncio task per container.

A launch makes the sandbox, builds the container (slave/task_config.py, then
the image: slave/task_image.py), starts it and follows it; following waits
for the container's end, lets a kill in progress finish, destroys the
container and tells the core, which turns the end into the terminal update
(slave/task_status.py). Every outcome goes back to the core as an input
through its public transitions; what the core answers is handed to
``execute`` (the runtime, slave/agent.py). The runner owns the tasks it
creates and cancels them in :meth:`TaskRunner.cancel_all`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from corral.codec import resources_from_proto
from corral.proto import messages_pb2 as pb
from corral.resources import ResourceError
from corral.slave import health
from corral.slave import task_config as translate
from corral.slave import work_dir as work_dir_modes
from corral.slave.agent_core import AgentCore, TaskRun
from corral.slave.agent_effects import Effect
from corral.slave.containerizer import ContainerConfig, ContainerError, Containerizer, Termination
from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.images.pull import Puller
from corral.slave.containerizer.images.registry import RegistryClient
from corral.slave.containerizer.images.registry_config import RegistryConfig
from corral.slave.status_updates import TaskKey
from corral.slave.task_image import with_image

log = structlog.get_logger(__name__)
health_log = structlog.get_logger(health.__name__)

Clock = Callable[[], float]


class TaskRunner:
    """Containers of the core's tasks, started, followed and killed."""

    def __init__(
        self,
        core: AgentCore,
        containerizer: Containerizer,
        images: ImageStore,
        work_dir: Path,
        host: Callable[[], translate.Host],
        execute: Callable[[list[Effect]], None],
        clock: Clock,
        *,
        image_import_dirs: tuple[Path, ...] = (),
        allowed_host_paths: tuple[Path, ...] = (),
        registries: RegistryConfig | None = None,
        logger: Callable[[], Any] = lambda: log,
    ) -> None:
        self._core = core
        self.containerizer = containerizer
        self.images = images
        self.work_dir = work_dir
        self._host = host
        self._execute = execute
        self._clock = clock
        #: the agent's logger as it is now (bound to its agent id once registered)
        self._log = logger
        self.image_import_dirs = image_import_dirs
        self.allowed_host_paths = allowed_host_paths
        #: pulls the registry images tasks name, into ``images``
        self.puller = Puller(images, RegistryClient(registries))
        self._watchers: dict[TaskKey, asyncio.Task[None]] = {}
        self._kills: dict[TaskKey, asyncio.Task[None]] = {}

    # -- effects ------------------------------------------------------------------

    def launch(self, key: TaskKey) -> None:
        run = self._core.tasks[key]
        self._own(self._watchers, key, self._run_task(run), f"task-{key[1]}")

    def follow(self, key: TaskKey, lost: str) -> None:
        run = self._core.tasks[key]
        self._own(self._watchers, key, self._follow_checked(run, lost), f"task-{key[1]}")

    def kill(self, key: TaskKey, grace_s: float) -> None:
        running = self._kills.get(key)
        if running is None or running.done():
            run = self._core.tasks[key]
            self._own(self._kills, key, self._kill(run, grace_s), f"kill-{key[1]}")

    def tasks(self) -> list[asyncio.Task[None]]:
        """Every watcher and kill still held."""
        return [*self._watchers.values(), *self._kills.values()]

    async def cancel_all(self) -> None:
        """Cancel every watcher and kill, and wait for them."""
        held = self.tasks()
        for t in held:
            t.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        self._watchers.clear()
        self._kills.clear()

    def _own(self, table: dict[TaskKey, asyncio.Task[None]], key: TaskKey, coro: object, name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)  # type: ignore[arg-type]
        table[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if table.get(key) is done:
                del table[key]

        task.add_done_callback(forget)

    # -- the container config -----------------------------------------------------

    def lease_file(self, run: TaskRun) -> Path:
        """Holds the task's image layers from `corral image rm` until the container is destroyed."""
        return self.work_dir / "containers" / run.container_id / "layers"

    def container_config(self, run: TaskRun, prepare: bool = True) -> ContainerConfig:
        """The container a task runs in; ``prepare`` also makes its sandbox
        (not for one re-attached after a restart: its sandbox is its own now)."""
        if prepare:
            resources_from_proto(run.info.resources)  # a bad one fails before the sandbox is made
            work_dir_modes.make_sandbox(run.sandbox)
            user = translate.task_user(run.info)
            if user is not None:
                # The task must be able to write its own sandbox (stdout, files).
                os.chown(run.sandbox, *user)
        return translate.container_config(
            run.info, run.framework_id, run.container_id, run.sandbox, self._host()
        )

    # -- one task -----------------------------------------------------------------

    async def _run_task(self, run: TaskRun) -> None:
        core, key = self._core, run.key
        try:
            self._execute(core.starting(key, self._clock()))
            try:
                config = await with_image(
                    self.container_config(run),
                    run.info,
                    self.images,
                    self.image_import_dirs,
                    self.allowed_host_paths,
                    lease=self.lease_file(run),
                    puller=self.puller,
                )
                pid = await self.containerizer.launch(config)
            except (ContainerError, ResourceError, OSError) as e:
                self.images.release(self.lease_file(run))
                self._execute(core.launch_failed(key, str(e), self._clock()))
                return
            self._execute(core.container_launched(key, pid, self._clock()))
            await self._follow_checked(run)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._log().exception("task.failed_unexpectedly", task_id=key[1])
            self._execute(core.agent_error(key, str(e), self._clock()))

    async def _follow_checked(self, run: TaskRun, lost: str = "") -> None:
        """:meth:`_follow`, running the task's health check meanwhile (if it has one)."""
        checker = None if lost else self._start_health_check(run)
        try:
            await self._follow(run, lost)
        finally:
            if checker is not None:
                checker.cancel()

    def _start_health_check(self, run: TaskRun) -> asyncio.Task[None] | None:
        core, key = self._core, run.key
        if not run.info.HasField("health_check"):
            return None
        env = dict(self.container_config(run, prepare=False).env)
        task_log = health_log.bind(task_id=key[1])

        def task_pid() -> int:
            return self.containerizer.task_pid(run.container_id) or run.pid

        def report(healthy: bool, message: str) -> None:
            if run.state == pb.TASK_RUNNING:
                task_log.info("task.health_changed", healthy=healthy, message=message)
            self._execute(core.health_changed(key, healthy, message, self._clock()))

        def kill(message: str) -> None:
            if run.state == pb.TASK_RUNNING:
                task_log.warning("task.unhealthy_killed", message=message)
            self._execute(core.unhealthy(key, message, self._clock()))

        enter = health.container_enter(self.containerizer, run.container_id)
        return health.start(run.info, env, str(run.sandbox), task_pid, report, kill, enter)

    async def _follow(self, run: TaskRun, lost: str = "") -> None:
        """Wait for a launched (or re-attached) task to end and have its terminal
        update made; ``lost`` says why its end cannot be known (it is reported TASK_LOST)."""
        core, key = self._core, run.key
        try:
            termination: Termination = await self.containerizer.wait(run.container_id)
            # The main process is gone; the terminal update waits until every
            # other process of the task is gone too (a kill in progress
            # finishes its grace period, leftovers are killed by destroy), so
            # "KILLED" or "FINISHED" means nothing of the task still runs.
            kill = self._kills.get(key)
            if kill is not None:
                with contextlib.suppress(Exception):
                    await kill
            try:
                await self.containerizer.destroy(run.container_id)
            except Exception:
                self._log().exception("task.cleanup_failed", task_id=key[1])
            self.images.release(self.lease_file(run))
            self._execute(core.container_ended(key, termination, lost, self._clock()))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._log().exception("task.failed_unexpectedly", task_id=key[1])
            self._execute(core.agent_error(key, str(e), self._clock()))

    async def _kill(self, run: TaskRun, grace_s: float) -> None:
        try:
            await self.containerizer.kill(run.container_id, grace_s)
        except Exception:
            self._log().exception("task.kill_failed", task_id=run.info.task_id)
