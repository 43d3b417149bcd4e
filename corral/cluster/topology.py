"""Pure planning of a test cluster: names, addresses, ports and the arguments of
each node's command. No I/O: the runner passes in what it observed (networks in
use, resources) and carries the plan out."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from corral.codec import parse_attributes
from corral.errors import CorralError
from corral.resources import ResourceError, Resources

Role = Literal["zookeeper", "master", "agent"]

#: Clusters take one /24 each out of this range.
BASE = ipaddress.IPv4Network("10.213.0.0/16")
MASTER_PORT = 5050
ZK_CLIENT_PORT, ZK_QUORUM_PORT, ZK_ELECTION_PORT = 2181, 2888, 3888
ZK_PATH = "/corral"
MAX_MASTERS = 9
MAX_ZK = 7
MAX_AGENTS = 150
# Host-part of each role's first address in the cluster's /24 (.1 is the bridge).
_FIRST_HOST = {"zookeeper": 11, "master": 21, "agent": 101}
_ROLE_LETTER = {"zookeeper": "z", "master": "m", "agent": "a"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")


class TopologyError(CorralError, ValueError):
    """A cluster cannot be planned as asked (the message names the option)."""


@dataclass(frozen=True)
class ClusterSpec:
    """What the user asked for."""

    name: str
    masters: int = 3
    agents: int = 5
    zk: str | None = None  # an existing ensemble's zk:// URL; None starts zk_nodes of our own
    zk_nodes: int = 3
    agent_resources: tuple[str, ...] = ()  # one spec for all, or one per agent
    agent_attributes: tuple[str, ...] = ()  # cycled over the agents
    zk_session_timeout_s: float = 5.0


@dataclass(frozen=True)
class NodePlan:
    """One process of the cluster and the namespace it lives in."""

    role: Role
    index: int  # 1-based within its role
    name: str  # "zk1", "master2", "agent3"
    netns: str  # /run/netns/<netns>
    veth: str  # host side of its veth pair (the peer is eth0 inside)
    address: str
    hostname: str
    attributes: str = ""  # agents: "rack:r1;zone:a"
    resources: str = ""  # agents: "cpus:1;mem:1024;..."


@dataclass(frozen=True)
class Plan:
    name: str
    subnet: ipaddress.IPv4Network
    bridge: str
    nodes: tuple[NodePlan, ...]
    zk_url: str
    own_zookeeper: bool
    zk_session_timeout_s: float
    cgroup_root: str

    @property
    def bridge_address(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    def role(self, role: Role) -> list[NodePlan]:
        return [n for n in self.nodes if n.role == role]

    def node(self, name: str) -> NodePlan:
        for n in self.nodes:
            if n.name == name:
                return n
        raise TopologyError(f"cluster {self.name!r} has no node {name!r}")


def validate_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise TopologyError(
            f"--name {name!r}: use 1-20 characters (lower-case letters, digits, '-'), starting with a letter"
        )


def choose_subnet(in_use: Iterable[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    """The first /24 of :data:`BASE` that overlaps no network the host uses."""
    taken = list(in_use)
    for candidate in BASE.subnets(new_prefix=24):
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise TopologyError(f"every /24 of {BASE} is in use on this host; bring a cluster down first")


def normalize_attributes(text: str) -> str:
    """``rack:r1,zone:a`` or ``rack:r1;zone:a`` → the agent's ``rack:r1;zone:a``."""
    try:
        attrs = parse_attributes(text.replace(",", ";"))
    except ValueError as e:
        raise TopologyError(f"--agent-attributes {text!r}: {e}") from None
    return ";".join(f"{k}:{v}" for k, v in attrs.items())


def _check_counts(spec: ClusterSpec) -> None:
    if not 1 <= spec.masters <= MAX_MASTERS:
        raise TopologyError(f"--masters: must be 1..{MAX_MASTERS}, got {spec.masters}")
    if not 1 <= spec.agents <= MAX_AGENTS:
        raise TopologyError(f"--agents: must be 1..{MAX_AGENTS}, got {spec.agents}")
    if spec.zk is None and not (1 <= spec.zk_nodes <= MAX_ZK and spec.zk_nodes % 2 == 1):
        raise TopologyError(f"--zk-nodes: must be odd and 1..{MAX_ZK}, got {spec.zk_nodes}")
    if len(spec.agent_resources) not in (0, 1, spec.agents):
        raise TopologyError(
            f"--agent-resources: give one for every agent or {spec.agents} (one per agent), "
            f"got {len(spec.agent_resources)}"
        )
    for text in spec.agent_resources:
        try:
            Resources.parse(text)
        except ResourceError as e:
            raise TopologyError(f"--agent-resources {text!r}: {e}") from None
    if not spec.zk_session_timeout_s > 0:
        raise TopologyError(f"--zk-session-timeout: must be > 0, got {spec.zk_session_timeout_s}")


def plan(spec: ClusterSpec, subnet: ipaddress.IPv4Network, default_resources: Sequence[str]) -> Plan:
    """Lay the cluster out on ``subnet``. ``default_resources[i]`` is agent i's
    share of the host, used where the spec gives none."""
    validate_name(spec.name)
    _check_counts(spec)
    if subnet.prefixlen != 24 or not subnet.subnet_of(BASE):
        raise TopologyError(f"subnet {subnet}: must be a /24 of {BASE}")
    tag = f"crl{int(subnet.network_address.packed[2])}"  # unique while the subnet is ours
    attributes = [normalize_attributes(a) for a in spec.agent_attributes]
    resources = list(spec.agent_resources) or list(default_resources)

    def node(role: Role, i: int) -> NodePlan:
        short = {"zookeeper": "zk", "master": "master", "agent": "agent"}[role] + str(i)
        host = subnet.network_address + _FIRST_HOST[role] + i - 1
        extra: dict[str, str] = {}
        if role == "agent":
            extra["attributes"] = attributes[(i - 1) % len(attributes)] if attributes else ""
            extra["resources"] = resources[0] if len(resources) == 1 else resources[i - 1]
        return NodePlan(
            role=role,
            index=i,
            name=short,
            netns=f"corral-{spec.name}-{short}",
            veth=f"{tag}{_ROLE_LETTER[role]}{i}",
            address=str(host),
            hostname=f"{spec.name}-{short}",
            **extra,
        )

    zk_nodes = [] if spec.zk else [node("zookeeper", i) for i in range(1, spec.zk_nodes + 1)]
    nodes = (
        *zk_nodes,
        *(node("master", i) for i in range(1, spec.masters + 1)),
        *(node("agent", i) for i in range(1, spec.agents + 1)),
    )
    own_url = "zk://" + ",".join(f"{n.address}:{ZK_CLIENT_PORT}" for n in zk_nodes) + ZK_PATH
    zk_url = spec.zk or own_url
    return Plan(
        name=spec.name,
        subnet=subnet,
        bridge=f"{tag}br",
        nodes=nodes,
        zk_url=zk_url,
        own_zookeeper=spec.zk is None,
        zk_session_timeout_s=spec.zk_session_timeout_s,
        cgroup_root=f"corral-cluster-{spec.name}",
    )


def node_cgroup(p: Plan, n: NodePlan) -> str:
    """The node's cgroup (its share of the host); its process runs in ``<this>/daemon``."""
    return f"{p.cgroup_root}/{n.name}"


def zookeeper_servers(p: Plan) -> list[str]:
    """The ``server.N=`` lines every ZooKeeper node's zoo.cfg holds (none for one node: standalone)."""
    if len(p.role("zookeeper")) == 1:
        return []
    return [f"server.{n.index}={n.address}:{ZK_QUORUM_PORT}:{ZK_ELECTION_PORT}" for n in p.role("zookeeper")]


def master_args(p: Plan, n: NodePlan) -> list[str]:
    """Arguments of ``corral`` for a master node."""
    return [
        "master",
        "--listen",
        f"{n.address}:{MASTER_PORT}",
        "--zk",
        p.zk_url,
        "--zk-session-timeout",
        f"{p.zk_session_timeout_s:g}",
    ]


def agent_args(p: Plan, n: NodePlan, work_dir: Path) -> list[str]:
    """Arguments of ``corral`` for an agent node: its tasks' cgroups nest under the node's."""
    args = [
        "agent",
        "--master",
        p.zk_url,
        "--work-dir",
        str(work_dir),
        "--hostname",
        n.hostname,
        "--cgroup-prefix",
        f"{node_cgroup(p, n)}/containers",
    ]
    if n.resources:
        args += ["--resources", n.resources]
    if n.attributes:
        args += ["--attributes", n.attributes]
    return args
