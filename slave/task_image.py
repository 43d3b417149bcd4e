"""A task's image and volumes, turned into what the containerizer runs.

The agent builds a task's :class:`ContainerConfig` for the host (agent.py);
this module applies ``TaskInfo.container``: it resolves the image in the
agent's image store (a ``NAME:TAG``, or a tarball path imported on first use,
off the event loop), puts the container's root on its layers and applies the
image's config the way Docker does where the task says nothing:

* ``Env``: the image's, then corral's ``CORRAL_*`` variables (the sandbox is
  ``/mnt/sandbox`` inside, also as ``$MESOS_SANDBOX``, and ``$HOME`` unless
  the image sets it), then the task's own environment;
* ``Entrypoint`` + ``Cmd`` run when the task gives no command; a task's own
  command replaces both;
* ``WorkingDir`` is the working directory (else the sandbox).

``User`` is not applied: the task's ``uid``/``gid`` decide.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from corral.proto import messages_pb2 as pb
from corral.slave.containerizer import ContainerConfig, ContainerError
from corral.slave.containerizer.images import ImageStore
from corral.slave.containerizer.overlay import SANDBOX_PATH, Rootfs
from corral.slave.containerizer.volumes import Volume

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _has_command(command: pb.CommandInfo) -> bool:
    if command.shell:
        return bool(command.value.strip())
    return bool(command.arguments or command.value)


async def with_image(config: ContainerConfig, info: pb.TaskInfo, store: ImageStore) -> ContainerConfig:
    """``config`` with the task's image and volumes; raises ContainerError (ImageError) with a sentence."""
    container = info.container
    volumes = tuple(
        Volume(v.container_path, v.host_path, v.read_only, v.tmpfs_size_bytes) for v in container.volumes
    )
    if not container.image:
        if container.read_only_root:
            raise ContainerError("container.read_only_root: needs an image")
        return replace(config, volumes=volumes) if volumes else config
    image = await asyncio.to_thread(store.obtain, container.image)
    layers = store.layer_dirs(image)
    env = {"PATH": DEFAULT_PATH}
    env.update(entry.split("=", 1) for entry in image.config.env)  # type: ignore[misc]
    env.update({k: v for k, v in config.env.items() if k.startswith("CORRAL_")})
    env.setdefault("HOME", SANDBOX_PATH)
    env.update(CORRAL_SANDBOX=SANDBOX_PATH, MESOS_SANDBOX=SANDBOX_PATH)
    env.update(info.command.environment)
    argv = config.argv
    if not _has_command(info.command):
        argv = image.config.entrypoint + image.config.cmd
        if not argv:
            raise ContainerError(
                f"image {container.image!r} has neither Entrypoint nor Cmd and the task gives no command"
            )
    return replace(
        config,
        argv=argv,
        env=env,
        rootfs=Rootfs(layers, read_only=container.read_only_root),
        volumes=volumes,
        workdir=image.config.working_dir,
    )
