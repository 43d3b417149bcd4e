"""User namespaces for containers: made by the supervisor, entered by the command.

Standard library only (the fork server loads it; see launcher.py), and only
os-level calls: it runs after ``fork``.

Every namespace a container has besides this one (mount, pid, net, uts, ipc,
cgroup) is made by host root and so *owned by the host's user namespace*:
the container's root, with all capabilities in its own user namespace, has
none over them. It cannot mount, unmount, set the hostname or reach the
cgroup files, even where another layer (seccomp, dropped capabilities)
failed. The user namespace is entered last, just before exec, by ``setns``
into one the supervisor made beforehand (``make``): nothing the container
does needs a handshake with its parent, and the mounts can be idmapped
before it exists in the command.

Ownership (probed on Linux 6.18 here, see docs/architecture.md):

* the sandbox is re-mounted *idmapped* (``restack``): on disk its files stay
  the host's (uid 0 is root's), in the container they are its root's;
* an image's layers are idmapped the same way and stacked by overlayfs;
  an idmapped *overlay* mount is refused (EINVAL: overlayfs does not allow
  it), and an idmapped *upper* layer cannot work because overlayfs copies up
  with the mounter's (host root's) ids, which the idmap cannot represent
  (EOVERFLOW: "failed to create directory ...work/work"): the upper layer is
  instead chowned to the container's range (on disk its files have host ids
  base..base+65535; it is removed with the container);
* volumes are not idmapped: a host path keeps its owners, so container root
  is "nobody" to host-owned files.
"""

from __future__ import annotations

import os

from . import kernel


def make(base: int, size: int) -> int:
    """A user namespace mapping ids 0..size-1 to host ids base..; an O_RDONLY,
    close-on-exec fd of it. Forks a helper that unshares it and waits while
    this (host root) process writes its maps: the maps of a namespace can only
    be written from outside it."""
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.fork()
    except OSError:
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)
        raise
    if pid == 0:
        code = 1
        try:
            # Else the helper itself would hold the pipe's write end open and
            # wait for an EOF that never comes.
            os.close(go_w)
            os.close(ready_r)
            kernel.unshare(kernel.CLONE_NEWUSER)
            os.write(ready_w, b"u")
            os.read(go_r, 1)  # EOF or a byte: the parent has what it needs
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    try:
        if os.read(ready_r, 1) != b"u":
            raise OSError(1, "the user namespace helper could not unshare it")
        mapping = b"0 %d %d\n" % (base, size)
        for name in (b"uid_map", b"gid_map"):
            fd = os.open(b"/proc/%d/%s" % (pid, name), os.O_WRONLY)
            try:
                os.write(fd, mapping)
            finally:
                os.close(fd)
        return os.open(b"/proc/%d/ns/user" % pid, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(go_w)  # the helper leaves; its namespace lives on in the fd
        os.waitpid(pid, 0)


def restack(path: bytes, userns_fd: int) -> None:
    """Mount an idmapped copy of the mount tree at ``path`` over it: only its
    top mount is idmapped, mounts below (volumes) keep their ids."""
    fd = kernel.open_tree_clone(path, recursive=True)
    try:
        kernel.mount_setattr_idmap(fd, userns_fd)
        kernel.move_mount_fd(fd, path)
    finally:
        os.close(fd)


def idmapped_copy(source: bytes, target: bytes, userns_fd: int) -> None:
    """Mount an idmapped copy of the directory ``source`` (not what is mounted below it) at ``target``."""
    fd = kernel.open_tree_clone(source, recursive=False)
    try:
        kernel.mount_setattr_idmap(fd, userns_fd)
        kernel.move_mount_fd(fd, target)
    finally:
        os.close(fd)


def enter(userns_fd: int) -> None:
    """Join the user namespace as its root, with no host group left: a
    supplementary group of the host (root's gid 0) would otherwise still
    count in every permission check, whatever the namespace."""
    kernel.setns(userns_fd, kernel.CLONE_NEWUSER)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
