"""A task's image and volumes, turned into what the containerizer runs.

The agent builds a task's :class:`ContainerConfig` for the host (agent.py);
this module applies ``TaskInfo.container``: it resolves the image in the
agent's image store (a ``NAME:TAG``, or a tarball path under one of the
agent's ``--image-import-dir`` imported on first use, off the event loop),
puts the container's root on its layers and applies the image's config the
way Docker does where the task says nothing:

* ``Env``: the image's, then corral's ``CORRAL_*`` variables (the sandbox is
  ``/mnt/sandbox`` inside, also as ``$MESOS_SANDBOX``, and ``$HOME`` unless
  the image sets it), then the task's own environment;
* ``Entrypoint`` + ``Cmd`` run when the task gives no command; a task's own
  command replaces both;
* ``WorkingDir`` is the working directory (else the sandbox);
* ``User`` (``uid[:gid]`` or a name from the image's ``/etc/passwd`` and
  ``/etc/group``) when the task sets no ``uid``.
"""

from __future__ import annotations

import asyncio
import os
import stat
from dataclasses import replace
from pathlib import Path

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


async def with_image(
    config: ContainerConfig,
    info: pb.TaskInfo,
    store: ImageStore,
    import_dirs: tuple[Path, ...] = (),
    allowed_host_paths: tuple[Path, ...] = (),
    lease: Path | None = None,
) -> ContainerConfig:
    """``config`` with the task's image and volumes; raises ContainerError (ImageError) with a sentence.

    A tarball path is imported only from under ``import_dirs`` (ImageStore.obtain),
    a host path bound only from under ``allowed_host_paths`` (Volume.allowed).
    With ``lease`` (the container's ``containers/<id>/layers``) the image's
    layers are leased so `corral image rm` keeps them (ImageStore.lease).
    """
    container = info.container
    volumes = tuple(
        Volume(v.container_path, v.host_path, v.read_only, v.tmpfs_size_bytes).allowed(
            f"volumes[{i}]", allowed_host_paths
        )
        for i, v in enumerate(container.volumes)
    )
    if not container.image:
        if container.read_only_root:
            raise ContainerError("container.read_only_root: needs an image")
        return replace(config, volumes=volumes) if volumes else config
    image = await asyncio.to_thread(store.obtain, container.image, import_dirs)
    if lease is not None:
        layers = await asyncio.to_thread(store.lease, image, lease)
    else:
        layers = store.layer_dirs(image)
    env = {"PATH": DEFAULT_PATH}
    env.update(entry.split("=", 1) for entry in image.config.env)  # type: ignore[misc]
    env.update({k: v for k, v in config.env.items() if k.startswith("CORRAL_")})
    env.setdefault("HOME", SANDBOX_PATH)
    env.update(CORRAL_SANDBOX=SANDBOX_PATH, MESOS_SANDBOX=SANDBOX_PATH)
    env.update(info.command.environment)
    isolation = config.isolation
    if image.config.user and not container.HasField("uid"):
        user = image_user(image.config.user, layers)
        isolation = replace(isolation, user=user)
        config.sandbox.mkdir(parents=True, exist_ok=True)
        os.chown(config.sandbox, *user)  # the task writes its sandbox, as with a task's uid
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
        isolation=isolation,
    )


def _image_file(layers: tuple[Path, ...], path: str) -> bytes | None:
    """A small file of the image as its stacked layers show it (top layer first,
    whiteouts and opaque directories honoured, no symlink followed)."""
    parts = path.strip("/").split("/")
    for layer in reversed(layers):
        cur = layer
        opaque = False  # a directory on the path in this layer hides the layers below
        for i, part in enumerate(parts):
            cur = cur / part
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                if opaque:
                    return None
                break
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                return None  # a whiteout: deleted in this layer
            if i == len(parts) - 1:
                return cur.read_bytes()[: 1 << 20] if stat.S_ISREG(st.st_mode) else None
            if not stat.S_ISDIR(st.st_mode):
                return None
            opaque = opaque or _is_opaque(cur)
    return None


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _lookup(data: bytes | None, name: str) -> str | None:
    for line in (data or b"").decode(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == name:
            return line
    return None


def image_user(spec: str, layers: tuple[Path, ...]) -> tuple[int, int]:
    """The image config's ``User`` as (uid, gid); raises ContainerError if it names nobody."""
    user, _, group = spec.partition(":")
    if user.isdigit():
        uid, gid = int(user), int(user)
    else:
        entry = _lookup(_image_file(layers, "etc/passwd"), user)
        if entry is None:
            raise ContainerError(f"the image's User {spec!r}: no user {user!r} in its /etc/passwd")
        fields = entry.split(":")
        if not (fields[2].isdigit() and fields[3].isdigit()):
            raise ContainerError(f"the image's User {spec!r}: malformed /etc/passwd entry")
        uid, gid = int(fields[2]), int(fields[3])
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            entry = _lookup(_image_file(layers, "etc/group"), group)
            if entry is None or not entry.split(":")[2].isdigit():
                raise ContainerError(f"the image's User {spec!r}: no group {group!r} in its /etc/group")
            gid = int(entry.split(":")[2])
    if max(uid, gid) > 2**32 - 2:
        raise ContainerError(f"the image's User {spec!r}: ids must be below 4294967295")
    return uid, gid
