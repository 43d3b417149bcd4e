"""Bridge, network namespaces and veth pairs through iproute2, and the checks
``down`` and the tests use to prove nothing is left.

Every command goes through :class:`Ip`, which tests can replace with a recorder.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

import structlog

from corral.errors import CorralError

log = structlog.get_logger("corral.cluster.netns")
NETNS_DIR = Path("/run/netns")


class NetworkError(CorralError):
    """An iproute2 command failed (the message holds the command and its error)."""


class Ip:
    """Runs ``ip`` with a deadline."""

    def run(self, *args: str, check: bool = True) -> str:
        try:
            res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
        except FileNotFoundError:
            raise NetworkError("`ip` is not installed: apt-get install iproute2") from None
        if check and res.returncode != 0:
            raise NetworkError(f"ip {' '.join(args)}: {res.stderr.strip() or res.returncode}")
        return res.stdout


def host_networks(ip: Ip) -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address on or a route to (any table)."""
    nets: list[ipaddress.IPv4Network] = []
    for a in json.loads(ip.run("-j", "-4", "addr") or "[]"):
        for info in a.get("addr_info", []):
            nets.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for r in json.loads(ip.run("-j", "-4", "route", "show", "table", "all") or "[]"):
        dst = r.get("dst", "")
        if dst and dst != "default":
            try:
                nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
            except ValueError:
                continue
    return nets


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create_bridge(ip: Ip, bridge: str, address: str, prefixlen: int) -> None:
    """A bridge holding the host side of every node's veth; the host's address on it."""
    if link_exists(bridge):
        raise NetworkError(f"a link named {bridge} already exists")
    ip.run("link", "add", bridge, "type", "bridge")
    ip.run("addr", "add", f"{address}/{prefixlen}", "dev", bridge)
    ip.run("link", "set", bridge, "up")


def create_node(
    ip: Ip, netns: str, veth: str, bridge: str, address: str, prefixlen: int, gateway: str | None
) -> None:
    """A namespace whose ``eth0`` (peer of ``veth``, on ``bridge``) has ``address``."""
    ip.run("netns", "add", netns)
    ip.run("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip.run("link", "set", veth, "master", bridge, "up")
    ip.run("-n", netns, "addr", "add", f"{address}/{prefixlen}", "dev", "eth0")
    ip.run("-n", netns, "link", "set", "eth0", "up")
    ip.run("-n", netns, "link", "set", "lo", "up")
    if gateway:
        ip.run("-n", netns, "route", "add", "default", "via", gateway)


def delete_netns(ip: Ip, netns: str) -> None:
    if netns_exists(netns):
        ip.run("netns", "del", netns)


def delete_link(ip: Ip, name: str) -> None:
    if link_exists(name):
        ip.run("link", "del", name, check=False)
        if link_exists(name):
            raise NetworkError(f"link {name} could not be removed")


def netns_id(netns: str) -> tuple[int, int] | None:
    """(device, inode) identifying the namespace, or None if it is not mounted."""
    try:
        st = os.stat(NETNS_DIR / netns)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids_in(ns: tuple[int, int]) -> list[int]:
    """Processes whose network namespace is ``ns``."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == ns:
            out.append(int(entry.name))
    return out
