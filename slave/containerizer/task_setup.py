"""The task child: from a fork of the supervisor to a container ready to exec.

Standard library only, os-level calls only (it runs after fork; see
launcher.py). ``task_child`` sets the container up (cgroups, stdio,
namespaces, mounts, hostname, network, cwd); in a pid namespace it then
forks the command and stays behind as its init (``_init``); the command
drops its privileges and execs (privileges.py).
"""

from __future__ import annotations

import contextlib
import os
import signal

from . import hardening, idmap, kernel, network
from . import rootfs as fs
from .privileges import drop_privileges, exec_command
from .process import EXIT_SETUP_FAILED, fail, name_buffer, reset_signals, write_all
from .spec import LaunchSpec

_prctl = kernel._prctl  # the raw call: these processes cannot handle an exception
_INIT_NAME_ADDR = name_buffer(b"corral-init")
# What the container's init passes on to the command (as tini does); SIGCHLD
# is waited for too. SIGKILL/SIGSTOP from the host reach the init anyway.
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
_INIT_WAITS = frozenset((*_FORWARDED, signal.SIGCHLD))


def task_child(spec: LaunchSpec, exec_w: int, report_w: int, userns_fd: int = -1) -> None:
    """Set the container up, then exec the command (or, in a pid namespace, be its init).

    The order matters:

    1. join the cgroups first, so that everything below (and every byte the
       task allocates) is accounted and killable from the host;
    2. stdio (host paths, opened as root before the root switch and any uid
       switch);
    3. namespaces, mounts (with an image: overlayfs, /proc, /dev, /sys,
       /tmp, sandbox, volumes, then pivot_root; see rootfs.py), hostname and
       loopback while still fully privileged (they need CAP_SYS_ADMIN /
       CAP_NET_ADMIN); /proc is mounted after the fork into the new pid
       namespace (the supervisor unshared it), so it shows only the
       container's processes; then chdir;
    4. in a pid namespace, fork the command and stay behind as its init;
    5. in the command: enter its user namespace if it has one, drop the
       bounding set, setgroups/setgid/setuid, capset, PR_SET_NO_NEW_PRIVS,
       the seccomp filter, exec (privileges.py).

    With a user namespace (``userns_fd``, made by the supervisor) every mount
    above is still made by host root, so the namespaces stay the host's;
    the sandbox (and an image's layers) are idmapped onto it (idmap.py).

    Any failure goes to the agent as ``E cannot <stage>: <reason>``.
    """
    iso = spec.isolation
    stage = b"reset signals"
    try:
        reset_signals()
        pid = b"%d" % os.getpid()
        for procs in spec.cgroup_procs:
            stage = b"join cgroup " + procs
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        # Before the mounts: stdout and stderr are host paths, out of reach
        # once the container's root is switched.
        stage = b"open stdin, stdout and stderr"
        stdin = os.open(b"/dev/null", os.O_RDONLY)
        out_flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        stdout = os.open(spec.stdout, out_flags, 0o644)
        stderr = os.open(spec.stderr, out_flags, 0o644)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        for fd in {stdin, stdout, stderr} - {0, 1, 2}:
            os.close(fd)
        if iso.clone_flags:
            stage = b"unshare namespaces"
            kernel.unshare(iso.clone_flags)
        # In the new mount namespace (a bind from another one is EINVAL), and
        # before the private /tmp could hide a source under /tmp.
        stage = b"open the volumes"
        sources = fs.open_sources(spec.mounts)
        if spec.rootfs is not None:
            stage = b"set up the root filesystem"
            fs.enter_image(
                spec.rootfs,
                spec.mounts,
                sources,
                spec.cwd,
                iso.tmp_bytes,
                iso.devices,
                iso.cgroup_mounts,
                userns=(userns_fd, iso.userns_base),
                mqueue=bool(iso.clone_flags & kernel.CLONE_NEWIPC),
            )
        elif iso.clone_flags & kernel.CLONE_NEWNS:
            stage = b"set up mounts"
            _mounts(spec)
            stage = b"mount volumes"
            fs.mount_on_host(spec.mounts, sources, spec.sandbox)
            if userns_fd >= 0:
                # After the volumes: they are created through the plain sandbox
                # (host root has no id in the idmapped one) and keep their ids.
                stage = b"idmap the sandbox"
                idmap.restack(spec.sandbox, userns_fd)
        if iso.clone_flags & kernel.CLONE_NEWUTS and iso.hostname:
            stage = b"set the hostname"
            kernel.sethostname(iso.hostname)
        stage = b"set up the " + iso.network.encode() + b" network"
        network.setup(iso.network)
        stage = b"chdir to " + spec.cwd
        os.chdir(spec.cwd)
    except OSError as e:
        fail(exec_w, stage, e)
    if iso.pid_ns:
        _init(spec, exec_w, report_w, userns_fd)
    os.close(report_w)
    drop_privileges(spec, exec_w, userns_fd)
    exec_command(spec)


def _mounts(spec: LaunchSpec) -> None:
    """Private propagation, a fresh /proc and a private /tmp; the host sees none of them.

    With ``harden`` the host's tree gets what an image gets (hardening.py): a
    minimal /dev over the host's, a read-only /sys showing only the
    container's cgroups, masked and read-only /proc paths.
    """
    iso = spec.isolation
    kernel.mount(None, b"/", None, kernel.MS_REC | kernel.MS_PRIVATE, None)
    if iso.pid_ns:
        flags = kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC
        kernel.mount(b"proc", b"/proc", b"proc", flags, None)
    if iso.harden:
        dev_sources = hardening.open_dev_sources(iso.devices)
        try:
            hardening.mount_dev(
                b"/dev", iso.devices, dev_sources, mqueue=bool(iso.clone_flags & kernel.CLONE_NEWIPC)
            )
        finally:
            for fd in dev_sources:
                os.close(fd)
        hardening.mount_sys(b"", iso.cgroup_mounts)
        hardening.mask_and_protect(b"")
    if iso.tmp_bytes > 0:
        # A sandbox under /tmp (tests, small setups) would vanish under the
        # tmpfs: keep a handle on it and bind it back at the same path.
        keep = spec.cwd if spec.cwd.startswith(b"/tmp/") else None
        keep_fd = os.open(keep, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if keep else -1
        try:
            data = b"size=%d,mode=1777" % iso.tmp_bytes
            kernel.mount(b"tmpfs", b"/tmp", b"tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, data)
            if keep:
                os.makedirs(keep, 0o755, exist_ok=True)
                kernel.mount(b"/proc/self/fd/%d" % keep_fd, keep, None, kernel.MS_BIND | kernel.MS_REC, None)
        finally:
            if keep_fd >= 0:
                os.close(keep_fd)


def _init(spec: LaunchSpec, exec_w: int, report_w: int, userns_fd: int) -> None:
    """PID 1 of the container: fork the command, forward signals, reap, exit as it did.

    Like tini: the signals are blocked and taken with sigwaitinfo, so none is
    lost between the fork and the wait, and none hits PID 1's default action
    (which the kernel would drop). When this process exits the kernel kills
    everything left in the namespace.

    With a user namespace the init enters it first, so that no process of the
    container is host root; it needs no privilege to fork, forward and reap,
    and is made non-dumpable so that the command cannot ptrace it.
    """
    if userns_fd >= 0:
        try:
            idmap.enter(userns_fd)
            os.close(userns_fd)
            kernel.prctl(kernel.PR_SET_DUMPABLE, 0)
        except OSError as e:
            fail(exec_w, b"enter the user namespace", e)
        userns_fd = -1  # the command is in it already
    signal.pthread_sigmask(signal.SIG_BLOCK, _INIT_WAITS)
    try:
        command = os.fork()
    except OSError as e:
        fail(exec_w, b"fork the command", e)
    if command == 0:
        try:
            os.close(report_w)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            drop_privileges(spec, exec_w, userns_fd)
            exec_command(spec)
        finally:
            os._exit(EXIT_SETUP_FAILED)
    # The command's copy closes at exec, which is when the agent may go on.
    os.close(exec_w)
    _prctl(kernel.PR_SET_NAME, _INIT_NAME_ADDR, 0, 0, 0)
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            os.close(fd)
    while True:
        info = signal.sigwaitinfo(_INIT_WAITS)
        if info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(command, info.si_signo)
            continue
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == command:
                write_all(report_w, b"%d" % status)
                os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
