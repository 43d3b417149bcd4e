"""The launcher every node's process starts through:

    python -m corral.cluster.enter --netns /run/netns/N --hostname H \
        [--cgroup-procs FILE ...] -- COMMAND ...

It joins the node's cgroups first (so everything after is accounted to the
node), enters its network namespace, makes a UTS namespace with the node's
hostname, and execs COMMAND, which keeps this pid. Any failure exits 125 with
one sentence on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from corral.cluster import kernel

EXIT_CANNOT_ENTER = 125


def enter(netns: str, hostname: str, cgroup_procs: Sequence[str]) -> None:
    """Put this process in its cgroups, the network namespace and a new UTS namespace."""
    pid = str(os.getpid())
    for path in cgroup_procs:
        with open(path, "w") as f:
            f.write(pid)
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        kernel.setns(fd, kernel.CLONE_NEWNET)
    finally:
        os.close(fd)
    kernel.unshare(kernel.CLONE_NEWUTS)
    kernel.sethostname(hostname.encode())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="corral-cluster-enter")
    parser.add_argument("--netns", required=True)
    parser.add_argument("--hostname", required=True)
    parser.add_argument("--cgroup-procs", action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("a command is needed after --")
    try:
        enter(args.netns, args.hostname, args.cgroup_procs)
        os.execvp(command[0], command)
    except OSError as e:
        sys.stderr.write(f"corral cluster: cannot start {command[0]} in {args.netns}: {e}\n")
        sys.exit(EXIT_CANNOT_ENTER)


if __name__ == "__main__":
    main()
