"""The command's last steps before exec: privileges dropped, then execve.

Standard library only, os-level calls only (it runs after fork; see
launcher.py). In this order, each needing what the one before leaves:

1. enter the container's user namespace, if it has one (idmap.py): from
   then on every capability is only the namespace's;
2. drop the bounding set (needs CAP_SETPCAP, so before the uid switch; and
   after ``setns``, which gives a full bounding set in the new namespace);
3. setgroups/setgid/setuid, capset, PR_SET_NO_NEW_PRIVS;
4. the seccomp filter, last: every call after it is one the filter may deny.
"""

from __future__ import annotations

import errno
import os

from . import idmap, kernel
from .process import EXIT_NOT_FOUND, EXIT_SETUP_FAILED, fail, reset_signals
from .spec import LaunchSpec

# Not typing.TYPE_CHECKING: importing typing would cost the fork server memory.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

_CAP_LAST = kernel.last_cap()


def drop_privileges(spec: LaunchSpec, exec_w: int, userns_fd: int = -1) -> None:
    iso = spec.isolation
    stage = b"drop privileges"
    try:
        if userns_fd >= 0:
            stage = b"enter the user namespace"
            idmap.enter(userns_fd)
            os.close(userns_fd)
        if iso.cap_keep >= 0:
            stage = b"drop capabilities from the bounding set"
            for cap in range(_CAP_LAST + 1):
                if not iso.cap_keep & (1 << cap):
                    kernel.prctl(kernel.PR_CAPBSET_DROP, cap)
        if iso.uid >= 0:
            stage = b"switch to uid %d gid %d" % (iso.uid, iso.gid)
            os.setgroups(list(dict.fromkeys((iso.gid, *iso.groups))))
            os.setgid(iso.gid)
            os.setuid(iso.uid)
        if iso.cap_keep >= 0:
            stage = b"drop capabilities"
            effective, permitted, inheritable = kernel.capget()
            kernel.capset(effective & iso.cap_keep, permitted & iso.cap_keep, inheritable & iso.cap_keep)
        if iso.no_new_privs:
            stage = b"set no_new_privs"
            kernel.prctl(kernel.PR_SET_NO_NEW_PRIVS, 1)
        if iso.seccomp:
            # Last, in the command only: the init above it must still fork and
            # reap, and every call before exec here is one the filter may deny.
            stage = b"load the seccomp filter"
            kernel.seccomp_filter(iso.seccomp)
    except OSError as e:
        fail(exec_w, stage, e)


def exec_command(spec: LaunchSpec) -> None:
    """execvp(3)'s search: remember EACCES, skip ENOENT/ENOTDIR, stop on anything else."""
    error: OSError | None = None
    for path in spec.exec_paths:
        try:
            os.execve(path, spec.argv, spec.env)
        except OSError as e:
            if error is None or e.errno not in (errno.ENOENT, errno.ENOTDIR):
                error = e
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                break
    code = error.errno if error is not None and error.errno else errno.ENOENT
    os.write(2, b"corral: exec " + spec.argv[0] + b": " + os.strerror(code).encode() + b"\n")
    os._exit(EXIT_NOT_FOUND if code in (errno.ENOENT, errno.ENOTDIR) else EXIT_SETUP_FAILED)


def confine_and_exec(spec: LaunchSpec, report_fd: int) -> NoReturn:
    """Exec ``spec``'s command confined exactly as the task's command is:
    default signal dispositions, then ``drop_privileges`` (bounding set,
    uid/gid/groups, capabilities, no_new_privs, seccomp) and the exec. For a
    process already inside the container (enter.py; it joins a user namespace
    itself); a failure is reported on ``report_fd`` as ``Ecannot <stage>:
    <reason>`` and ends the process."""
    reset_signals()
    drop_privileges(spec, report_fd)
    exec_command(spec)
    os._exit(EXIT_SETUP_FAILED)  # exec_command does not return
