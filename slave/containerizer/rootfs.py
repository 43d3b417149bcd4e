"""The container's filesystem, set up by its init in its own mount namespace.

Standard library only: this runs in the fork server's children (see
launcher.py), after ``fork`` and before ``exec``, so it must not log, lock or
import anything new. Every step raises ``OSError(errno, "<step>: <reason>")``.

With an image (:class:`RootfsSpec`), in this order:

1. ``/`` made recursively private, so nothing below reaches the host;
2. overlayfs on ``root``: the image's layers read-only below, the
   container's own upper and work directories above;
3. a fresh ``/proc``; the minimal ``/dev``, a read-only ``/sys`` with the
   container's own cgroups and the masked and read-only paths (all in
   hardening.py); a tmpfs on ``/tmp``;
4. the container's own ``/etc/hostname``, ``/etc/hosts`` and
   ``/etc/resolv.conf`` written into its upper layer (etc_files.py), then
   the sandbox bind-mounted at ``sandbox_target`` (``/mnt/sandbox``);
5. the volumes (bind mounts, read-only when asked, and tmpfs);
6. the root itself remounted read-only when asked (the mounts above stay
   writable);
7. ``pivot_root`` into it and the old root detached.

Paths inside the image are resolved component by component without following
symlinks (an image could otherwise point a mount target at a host path), and
missing directories are created in the container's upper layer.

Without an image the volumes are mounted on the host's tree in the private
namespace: a target under the sandbox is created there, any other must exist.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass

from . import hardening, idmap, kernel

#: Files of /etc a spec may write (etc_files.py makes them; kept in step here,
#: since this module imports nothing of the agent's).
ETC_NAMES = (b"hostname", b"hosts", b"resolv.conf")


@dataclass(frozen=True)
class MountSpec:
    """One volume: ``kind`` is "bind" (``source`` is a host path) or "tmpfs"."""

    kind: str
    target: bytes  # absolute: in the image's root, or on the host without an image
    source: bytes = b""
    read_only: bool = False
    size_bytes: int = 0


@dataclass(frozen=True)
class RootfsSpec:
    """An image root: where to mount it, its layers and the container's own layer."""

    root: bytes  # an empty directory (host path) the overlay is mounted on
    lowerdirs: tuple[bytes, ...]  # bottom first
    upperdir: bytes
    workdir: bytes
    read_only: bool = False
    sandbox: bytes = b""  # host path of the sandbox
    sandbox_target: bytes = b"/mnt/sandbox"
    #: (name, content) written into the image's /etc (see etc_files.py)
    etc_files: tuple[tuple[bytes, bytes], ...] = ()


def mount_spec_to_json(m: MountSpec) -> dict[str, object]:
    return {
        "kind": m.kind,
        "target": m.target.decode("latin-1"),
        "source": m.source.decode("latin-1"),
        "read_only": m.read_only,
        "size_bytes": m.size_bytes,
    }


def rootfs_spec_to_json(r: RootfsSpec) -> dict[str, object]:
    return {
        "root": r.root.decode("latin-1"),
        "lowerdirs": [d.decode("latin-1") for d in r.lowerdirs],
        "upperdir": r.upperdir.decode("latin-1"),
        "workdir": r.workdir.decode("latin-1"),
        "read_only": r.read_only,
        "sandbox": r.sandbox.decode("latin-1"),
        "sandbox_target": r.sandbox_target.decode("latin-1"),
        "etc_files": [[n.decode("latin-1"), c.decode("latin-1")] for n, c in r.etc_files],
    }


def _b(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what}: expected a string")
    return value.encode("latin-1")


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what}: expected a boolean")
    return value


def mount_spec_from_json(data: object) -> MountSpec:
    if not isinstance(data, dict):
        raise ValueError("mounts: expected objects")
    kind = data.get("kind")
    if kind not in ("bind", "tmpfs"):
        raise ValueError(f"mounts.kind: unknown {kind!r}")
    size = data.get("size_bytes", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("mounts.size_bytes: expected an integer >= 0")
    return MountSpec(
        kind=str(kind),
        target=_b(data.get("target"), "mounts.target"),
        source=_b(data.get("source", ""), "mounts.source"),
        read_only=_flag(data.get("read_only", False), "mounts.read_only"),
        size_bytes=size,
    )


def rootfs_spec_from_json(data: object) -> RootfsSpec:
    if not isinstance(data, dict):
        raise ValueError("rootfs: expected an object")
    lower = data.get("lowerdirs")
    if not isinstance(lower, list) or not lower:
        raise ValueError("rootfs.lowerdirs: expected a non-empty list")
    return RootfsSpec(
        root=_b(data.get("root"), "rootfs.root"),
        lowerdirs=tuple(_b(d, "rootfs.lowerdirs") for d in lower),
        upperdir=_b(data.get("upperdir"), "rootfs.upperdir"),
        workdir=_b(data.get("workdir"), "rootfs.workdir"),
        read_only=_flag(data.get("read_only", False), "rootfs.read_only"),
        sandbox=_b(data.get("sandbox", ""), "rootfs.sandbox"),
        sandbox_target=_b(data.get("sandbox_target", "/mnt/sandbox"), "rootfs.sandbox_target"),
        etc_files=_etc_files(data.get("etc_files", [])),
    )


def _etc_files(data: object) -> tuple[tuple[bytes, bytes], ...]:
    if not isinstance(data, list):
        raise ValueError("rootfs.etc_files: expected a list")
    out = []
    for item in data:
        if not isinstance(item, list) or len(item) != 2:
            raise ValueError("rootfs.etc_files: expected [name, content] pairs")
        name, content = _b(item[0], "rootfs.etc_files.name"), _b(item[1], "rootfs.etc_files.content")
        if name not in ETC_NAMES:
            raise ValueError(f"rootfs.etc_files: {name!r} is not one of {ETC_NAMES}")
        out.append((name, content))
    return tuple(out)


class _Step:
    """Names the step in progress, so an OSError says what failed."""

    name = b""


def _err(step: bytes, e: OSError) -> OSError:
    reason = e.strerror or os.strerror(e.errno or 0)
    return OSError(e.errno or errno.EIO, step.decode("latin-1") + ": " + reason)


def open_sources(mounts: tuple[MountSpec, ...]) -> tuple[int, ...]:
    """An ``O_PATH`` fd per mount's host source (-1 for tmpfs), opened before any mount
    can hide it (a private /tmp covers sources under /tmp); close-on-exec."""
    fds = []
    for m in mounts:
        if m.kind != "bind":
            fds.append(-1)
            continue
        try:
            fd = os.open(m.source, os.O_PATH | os.O_CLOEXEC)
        except OSError as e:
            for opened in fds:
                if opened >= 0:
                    os.close(opened)
            raise _err(b"open volume source " + m.source, e) from None
        fds.append(fd)
        # The agent checked the source's real path against --allowed-host-paths:
        # a component swapped for a symlink since then must not redirect the bind.
        if os.readlink(_fd_path(fd)) != m.source:
            for opened in fds:
                if opened >= 0:
                    os.close(opened)
            raise OSError(
                errno.ELOOP,
                "volume source " + m.source.decode("latin-1") + ": is not its real path (a symlink?)",
            )
    return tuple(fds)


def _fd_path(fd: int) -> bytes:
    return b"/proc/self/fd/%d" % fd


def enter_image(
    spec: RootfsSpec,
    mounts: tuple[MountSpec, ...],
    sources: tuple[int, ...],
    cwd: bytes,
    tmp_bytes: int,
    devices: tuple[bytes, ...] = (),
    cgroup_mounts: tuple[tuple[bytes, bytes, bytes], ...] = (),
    userns: tuple[int, int] = (-1, -1),
    mqueue: bool = False,
) -> None:
    """Build the container's root in this (new, unshared) mount namespace and pivot into it.

    ``sources``: from :func:`open_sources`; ``devices`` and ``cgroup_mounts``:
    see hardening.py; ``userns``: (fd, host id base) of the container's user
    namespace, or (-1, -1): its layers and sandbox are then idmapped onto it,
    and its upper layer and /etc files are its root's (idmap.py); ``mqueue``:
    mount /dev/mqueue (with a private IPC namespace).
    """
    step = _Step()
    try:
        _enter_image(spec, mounts, sources, cwd, tmp_bytes, devices, cgroup_mounts, userns, mqueue, step)
    except OSError as e:
        raise _err(step.name, e) from None


def _enter_image(
    spec: RootfsSpec,
    mounts: tuple[MountSpec, ...],
    sources: tuple[int, ...],
    cwd: bytes,
    tmp_bytes: int,
    devices: tuple[bytes, ...],
    cgroup_mounts: tuple[tuple[bytes, bytes, bytes], ...],
    userns: tuple[int, int],
    mqueue: bool,
    step: _Step,
) -> None:
    root = spec.root
    userns_fd, base = userns
    step.name = b"make / private"
    kernel.mount(None, b"/", None, kernel.MS_REC | kernel.MS_PRIVATE, None)
    lowerdirs = spec.lowerdirs
    if userns_fd >= 0:
        step.name = b"idmap the image's layers"
        lowerdirs = _idmapped_layers(spec, userns_fd)
        # Copy-up writes with host root's ids, which an idmapped upper layer
        # cannot store (EOVERFLOW): the upper layer is the container's instead.
        os.chown(spec.upperdir, base, base)
    step.name = b"mount the image (overlayfs)"
    # overlayfs lists the top layer first.
    lower = b":".join(reversed(lowerdirs))
    data = b"lowerdir=" + lower + b",upperdir=" + spec.upperdir + b",workdir=" + spec.workdir
    kernel.mount(b"overlay", root, b"overlay", 0, data)
    nosuid_nodev_noexec = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC

    step.name = b"mount /proc"
    kernel.mount(b"proc", inside(root, b"/proc", True), b"proc", nosuid_nodev_noexec, None)

    step.name = b"mount /dev"
    dev = inside(root, b"/dev", True)
    dev_sources = hardening.open_dev_sources(devices)
    try:
        hardening.mount_dev(dev, devices, dev_sources, mqueue)
    finally:
        for fd in dev_sources:
            os.close(fd)

    step.name = b"mount /sys read-only"
    inside(root, b"/sys", True)
    hardening.mount_sys(root, cgroup_mounts)
    step.name = b"mask and protect /proc and /sys paths"
    hardening.mask_and_protect(root)

    if tmp_bytes > 0:
        step.name = b"mount /tmp"
        data = b"size=%d,mode=1777" % tmp_bytes
        kernel.mount(
            b"tmpfs", inside(root, b"/tmp", True), b"tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, data
        )

    if spec.etc_files:
        etc = inside(root, b"/etc", True)
        for name, content in spec.etc_files:
            step.name = b"write /etc/" + name
            _write_etc_file(etc + b"/" + name, content, base if userns_fd >= 0 else -1)

    step.name = b"bind the sandbox at " + spec.sandbox_target
    sandbox = inside(root, spec.sandbox_target, True)
    kernel.mount(spec.sandbox, sandbox, None, kernel.MS_BIND | kernel.MS_REC, None)

    for m, fd in zip(mounts, sources, strict=True):
        step.name = b"mount volume " + m.target
        _mount_volume(m, fd, inside(root, m.target, True, as_file=_is_file(fd)))

    step.name = b"create the working directory " + cwd
    workdir = inside(root, cwd, True)
    if userns_fd >= 0:
        # After the volumes, which host root creates through the plain bind
        # (it has no id in the idmapped one); they keep their own ids.
        step.name = b"idmap the sandbox"
        idmap.restack(sandbox, userns_fd)
        if os.stat(workdir).st_uid == 0 and not (cwd + b"/").startswith(spec.sandbox_target + b"/"):
            # Made just now by host root in the image: the container's root's.
            os.chown(workdir, base, base)

    if spec.read_only:
        step.name = b"make the root read-only"
        flags = kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY
        kernel.mount(None, root, None, flags, None)

    step.name = b"pivot_root"
    os.chdir(root)
    kernel.pivot_root(b".", b".")
    # The old root is now stacked on "/": detach it (the namespace is private).
    kernel.umount2(b".", kernel.MNT_DETACH)
    os.chdir(b"/")


def _idmapped_layers(spec: RootfsSpec, userns_fd: int) -> tuple[bytes, ...]:
    """Each image layer idmapped onto the user namespace, mounted beside the
    container's root (``<overlay>/lower-N``, in this mount namespace only)."""
    parent = spec.root.rsplit(b"/", 1)[0]
    out = []
    for i, layer in enumerate(spec.lowerdirs):
        target = parent + b"/lower-%d" % i
        with contextlib.suppress(FileExistsError):
            os.mkdir(target, 0o700)
        idmap.idmapped_copy(layer, target, userns_fd)
        out.append(target)
    return tuple(out)


def _write_etc_file(path: bytes, content: bytes, owner: int = -1) -> None:
    """Replace an /etc file in the container's upper layer; an image's symlink
    there is removed, never followed (it could point anywhere on the host).
    ``owner``: the host uid and gid it belongs to (-1: host root)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, path.decode("latin-1") + " is a directory in the image")
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        if owner >= 0:
            os.fchown(fd, owner, owner)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def mount_on_host(mounts: tuple[MountSpec, ...], sources: tuple[int, ...], sandbox: bytes) -> None:
    """Volumes of a container without an image, in its private mount namespace."""
    step = _Step()
    try:
        for m, fd in zip(mounts, sources, strict=True):
            step.name = b"mount volume " + m.target
            if m.target.startswith(sandbox + b"/"):
                target = inside(sandbox, m.target[len(sandbox) :], True, as_file=_is_file(fd))
            else:
                target = m.target
                os.stat(target)
            _mount_volume(m, fd, target)
    except OSError as e:
        raise _err(step.name, e) from None


def _is_file(fd: int) -> bool:
    return fd >= 0 and not stat.S_ISDIR(os.fstat(fd).st_mode)


def _mount_volume(m: MountSpec, fd: int, target: bytes) -> None:
    if m.kind == "tmpfs":
        flags = kernel.MS_NOSUID | kernel.MS_NODEV | (kernel.MS_RDONLY if m.read_only else 0)
        data = b"mode=1777,size=%d" % m.size_bytes
        kernel.mount(b"tmpfs", target, b"tmpfs", flags, data)
        return
    kernel.mount(_fd_path(fd), target, None, kernel.MS_BIND | kernel.MS_REC, None)
    if m.read_only:
        try:
            # The whole tree, mounts below the source included (Linux 5.12+).
            kernel.mount_setattr_recursive(target, kernel.MOUNT_ATTR_RDONLY)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            # Older kernels: only the top mount becomes read-only.
            kernel.mount(None, target, None, kernel.MS_REMOUNT | kernel.MS_BIND | kernel.MS_RDONLY, None)


def inside(root: bytes, path: bytes, create: bool, as_file: bool = False) -> bytes:
    """``root`` + ``path`` with no symlink followed; missing parts created when ``create``.

    The last component is made a directory, or an empty file when ``as_file``
    (a bind mount of a file needs a file to cover).
    """
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if b".." in parts:
        raise OSError(errno.EINVAL, f"{path.decode('latin-1')}: '..' is not allowed")
    cur = root.rstrip(b"/")
    for i, part in enumerate(parts):
        cur = cur + b"/" + part
        last = i == len(parts) - 1
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            if not create:
                raise
            if last and as_file:
                os.close(
                    os.open(cur, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
                )
            else:
                os.mkdir(cur, 0o755)
            continue
        if stat.S_ISLNK(st.st_mode):
            raise OSError(
                errno.ELOOP, f"{path.decode('latin-1')}: a symlink in the image at {part.decode('latin-1')}"
            )
        if not last and not stat.S_ISDIR(st.st_mode):
            raise OSError(
                errno.ENOTDIR, f"{path.decode('latin-1')}: {part.decode('latin-1')} is not a directory"
            )
    return cur or b"/"
