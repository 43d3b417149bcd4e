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

from corral.image_refs import is_remote_ref
from corral.proto import messages_pb2 as pb
from corral.slave.containerizer import ContainerConfig, ContainerError
from corral.slave.containerizer.images import ImageError, ImageStore
from corral.slave.containerizer.images.pull import Puller
from corral.slave.containerizer.overlay import SANDBOX_PATH, Rootfs
from corral.slave.containerizer.volumes import Volume

#: how much of an image's /etc/passwd or /etc/group is read
MAX_ID_FILE = 1 << 20
_POLICIES = {
    pb.ContainerInfo.IF_NOT_PRESENT: "if-not-present",
    pb.ContainerInfo.ALWAYS: "always",
    pb.ContainerInfo.NEVER: "never",
}
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
    puller: Puller | None = None,
) -> ContainerConfig:
    """``config`` with the task's image and volumes; raises ContainerError (ImageError) with a sentence.

    A tarball path is imported only from under ``import_dirs`` (ImageStore.obtain),
    a host path bound only from under ``allowed_host_paths`` (Volume.allowed).
    A registry reference (``HOST[:PORT]/REPO[:TAG|@DIGEST]``) is pulled by
    ``puller`` as the task's pull policy says (images/pull.py).
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
    if is_remote_ref(container.image):
        if puller is None:
            raise ImageError(f"image {container.image!r}: this agent pulls from no registry")
        policy = _POLICIES.get(container.pull_policy, "if-not-present")
        image = await asyncio.to_thread(puller.obtain, container.image, policy)
    else:
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
        uid, gid, groups = image_user(image.config.user, layers)
        isolation = replace(isolation, user=(uid, gid), groups=groups)
        config.sandbox.mkdir(parents=True, exist_ok=True)
        os.chown(config.sandbox, uid, gid)  # the task writes its sandbox, as with a task's uid
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
                return _read_head(cur) if stat.S_ISREG(st.st_mode) else None
            if not stat.S_ISDIR(st.st_mode):
                return None
            opaque = opaque or _is_opaque(cur)
    return None


def _read_head(path: Path) -> bytes | None:
    """At most MAX_ID_FILE bytes of a regular file, never following a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], MAX_ID_FILE
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _is_opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _entries(data: bytes | None) -> list[list[str]]:
    """The colon-separated entries (4+ fields) of an /etc/passwd or /etc/group text."""
    lines = (data or b"").decode(errors="replace").splitlines()
    return [f for f in (line.split(":") for line in lines) if len(f) >= 4]


def image_user(spec: str, layers: tuple[Path, ...]) -> tuple[int, int, tuple[int, ...]]:
    """The image config's ``User`` as (uid, gid, supplementary gids), as runc does:

    a name is looked up in the image's /etc/passwd (its uid and primary gid); a
    numeric uid takes the primary gid of its /etc/passwd entry if it has one,
    else 0. An explicit ``:group`` (gid, or name in /etc/group) sets the gid;
    without one, the groups of /etc/group listing the user's name are its
    supplementary groups. Raises ContainerError if the spec names nobody.
    """
    user, _, group = spec.partition(":")
    passwd = _entries(_image_file(layers, "etc/passwd"))
    if user.isdigit():
        uid = int(user)
        entry = next((f for f in passwd if f[2] == user or (f[2].isdigit() and int(f[2]) == uid)), None)
        name = entry[0] if entry else ""
        gid = int(entry[3]) if entry and entry[3].isdigit() else 0
    else:
        entry = next((f for f in passwd if f[0] == user), None)
        if entry is None:
            raise ContainerError(f"the image's User {spec!r}: no user {user!r} in its /etc/passwd")
        if not (entry[2].isdigit() and entry[3].isdigit()):
            raise ContainerError(f"the image's User {spec!r}: malformed /etc/passwd entry")
        name, uid, gid = user, int(entry[2]), int(entry[3])
    groups: tuple[int, ...] = ()
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((f for f in _entries(_image_file(layers, "etc/group")) if f[0] == group), None)
            if found is None or not found[2].isdigit():
                raise ContainerError(f"the image's User {spec!r}: no group {group!r} in its /etc/group")
            gid = int(found[2])
    elif name:
        members = _entries(_image_file(layers, "etc/group"))
        groups = tuple(
            dict.fromkeys(
                int(f[2]) for f in members if f[2].isdigit() and name in f[3].split(",") and int(f[2]) != gid
            )
        )
    if max(uid, gid, *groups) > 2**32 - 2:
        raise ContainerError(f"the image's User {spec!r}: ids must be below 4294967295")
    return uid, gid, groups[:65536]
