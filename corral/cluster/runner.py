"""Bring a test cluster up, report on it, and take it down leaving nothing.

``up`` records the plan in the state file before it creates anything, then
makes the bridge, one cgroup and one network namespace per node, starts the
ZooKeeper ensemble, the masters and the agents (each through
:mod:`corral.cluster.enter`), and waits until a master leads and every agent
is registered. Any failure on the way runs ``down``. ``down`` works from the
state file alone and is idempotent: it stops the recorded processes, kills
whatever else runs in the cluster's namespaces or cgroups, removes cgroups,
namespaces, veths and the bridge, then the directory and the state file, and
checks that nothing is left.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import structlog

from corral import testing_zookeeper as zk
from corral.cluster import netns, topology
from corral.cluster import tls as cluster_tls
from corral.cluster.state import (
    ClusterState,
    Process,
    alive,
    list_clusters,
    process_state,
    start_ticks,
    state_path,
)
from corral.cluster.topology import ClusterSpec, NodePlan, Plan, TopologyError
from corral.errors import CorralError
from corral.resources import Resources
from corral.slave.containerizer.cgroups import CgroupBackend, CgroupLimits, probe
from corral.slave.resources import DEFAULT_PORTS, detect
from corral.testing import corral_command
from corral.transport import Credentials

log = structlog.get_logger("corral.cluster")
LOCK = Path("/run/lock/corral-cluster.lock")
MIB = 1024 * 1024
#: Memory of a master's or ZooKeeper node's cgroup; an agent's is its share plus this.
DAEMON_MEM_BYTES = 1024 * MIB
STOP_GRACE_S = 15.0
_ZK_SERVING = ("leader", "follower", "standalone")
_MASTER_STATE = {True: "leading", False: "standby", None: "not answering"}


class ClusterError(CorralError):
    """A cluster could not be brought up or fully taken down."""


@dataclass(frozen=True)
class NodeStatus:
    """One line of ``corral cluster status``."""

    name: str
    role: str
    address: str
    hostname: str
    pid: int | None
    alive: bool
    state: str  # leader/follower (ZooKeeper), leading/standby (masters), connected/... (agents)
    detail: str = ""


# -- up ---------------------------------------------------------------------------


@contextlib.contextmanager
def _host_lock() -> Iterator[None]:
    """One ``up`` at a time chooses a subnet and makes its bridge (across CORRAL_HOMEs)."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def default_resources(agents: int, work_dir: Path) -> list[str]:
    """Each agent's equal share of this host (ports are not split: each agent has its own netns)."""
    out = []
    for i in range(agents):
        share = detect(work_dir, (i, agents))
        share = Resources(scalars=share.scalars, ranges={("ports", ""): DEFAULT_PORTS})
        out.append(share.format().replace(" ", ""))
    return out


def _check_host(spec: ClusterSpec) -> None:
    if os.geteuid() != 0:
        raise ClusterError("corral cluster needs root (network namespaces, bridges, cgroups)")
    if shutil.which("ip") is None:
        raise ClusterError("`ip` is not installed: apt-get install iproute2")
    if spec.zk is None and (reason := zk.available()):
        raise ClusterError(f"cannot start ZooKeeper: {reason}; or pass --zk")
    if spec.zk is not None:
        from corral.zk import parse_zk_url

        for host in parse_zk_url(spec.zk).hosts.split(","):
            name = host.rsplit(":", 1)[0].strip("[]")
            try:
                loopback = ipaddress.ip_address(name).is_loopback
            except ValueError:  # a host name: resolved by the nodes
                loopback = name == "localhost"
            if loopback:
                raise TopologyError(
                    f"--zk {spec.zk}: {name} is the host's loopback, which the nodes' namespaces "
                    "cannot reach; give an address of this host that is not loopback"
                )


def up(
    spec: ClusterSpec,
    timeout_s: float = 90.0,
    on_progress: Callable[[str], None] | None = None,
    *,
    tls: bool = True,
) -> ClusterState:
    """Create and start the cluster; return its state once a master leads and all agents are in.
    With ``tls`` (the default) it has a CA of its own and every node speaks mutual TLS
    (corral/cluster/tls.py)."""
    say = on_progress or (lambda _msg: None)
    topology.validate_name(spec.name)
    _refuse_existing(spec.name)
    _check_host(spec)
    from corral.cli.discovery import state_dir

    directory = state_dir() / "clusters" / spec.name
    ip = netns.Ip()
    started = time.monotonic()
    with _host_lock():
        _refuse_existing(spec.name)  # again, now that no other `up` can be making it
        used = netns.host_networks(ip) + _other_clusters_subnets()
        directory.mkdir(parents=True, exist_ok=True)
        try:
            shares = default_resources(spec.agents, directory)
            plan = topology.plan(spec, topology.choose_subnet(used), shares)
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        state = ClusterState(plan=plan, directory=directory, created_at=time.time())
        if tls:
            state.tls = cluster_tls.make(state)
        state.save()
        try:
            netns.create_bridge(ip, plan.bridge, plan.bridge_address, plan.prefixlen)
        except BaseException:
            down(state)
            raise

    def took() -> str:
        return f"{time.monotonic() - started:.1f}s"

    try:
        say(f"{took()} network {plan.subnet} on bridge {plan.bridge}")
        backend = probe()
        gateway = plan.bridge_address if not plan.own_zookeeper else None
        for n in plan.nodes:
            _make_cgroup(backend, plan, n)
            netns.create_node(ip, n.netns, n.veth, plan.bridge, n.address, plan.prefixlen, gateway)
        deadline = time.monotonic() + timeout_s
        if plan.own_zookeeper:
            for n in plan.role("zookeeper"):
                _start_zookeeper(state, backend, n)
            state.save()
            _wait(
                lambda: all(_zk_mode(n) in _ZK_SERVING for n in plan.role("zookeeper")),
                deadline,
                "the ZooKeeper ensemble to serve",
                state,
            )
            say(f"{took()} ZooKeeper ensemble serving: {plan.zk_url}")
        for n in (*plan.role("master"), *plan.role("agent")):
            _start_node(state, backend, n)
        state.save()
        say(f"{took()} {len(plan.role('master'))} master(s) and {len(plan.role('agent'))} agent(s) started")
        creds = cluster_tls.operator_credentials(state)
        _wait(lambda: _leader(plan, creds) is not None, deadline, "a master to lead", state)
        say(f"{took()} a master leads" + (" (mutual TLS)" if creds is not None else " (plaintext)"))
        _wait(
            lambda: _connected_agents(plan, creds) >= len(plan.role("agent")),
            deadline,
            "every agent to register",
            state,
        )
        say(f"{took()} every agent registered")
    except BaseException:
        with contextlib.suppress(Exception):
            for line in _failure_logs(state):
                say(line)
        down(state)
        raise
    return state


def _refuse_existing(name: str) -> None:
    if state_path(name).exists():
        raise ClusterError(f"a cluster named {name!r} exists; `corral cluster down {name}` first")


def _other_clusters_subnets() -> list[ipaddress.IPv4Network]:
    nets = []
    for name in list_clusters():
        with contextlib.suppress(CorralError, OSError, KeyError, TypeError):
            nets.append(ClusterState.load(name).plan.subnet)
    return nets


def _limits(n: NodePlan) -> CgroupLimits:
    if n.role == "agent":
        res = Resources.parse(n.resources) if n.resources else Resources()
        cpus_milli = res.scalar("cpus") or 1000
        # Without a mem share the agent advertises the host's memory: no tighter cap then.
        host_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        mem = res.scalar("mem") // 1000 * MIB + DAEMON_MEM_BYTES // 2 if res.scalar("mem") else host_bytes
        return CgroupLimits(cpu_shares=max(2, cpus_milli * 1024 // 1000), mem_bytes=mem)
    return CgroupLimits(cpu_shares=1024, mem_bytes=DAEMON_MEM_BYTES)


def _make_cgroup(backend: CgroupBackend, plan: Plan, n: NodePlan) -> None:
    """``<root>/<node>`` holds the node's share; its process runs in ``<node>/daemon``
    (cgroup v2 allows processes only in leaves), an agent's containers in
    ``<node>/containers`` (not ``tasks``: that name is a cgroup v1 file)."""
    backend.prepare_prefix(plan.cgroup_root)
    node = topology.node_cgroup(plan, n)
    backend.create(node, _limits(n))
    backend.create(f"{node}/daemon", _limits(n))


def _launcher(plan: Plan, backend: CgroupBackend, n: NodePlan) -> list[str]:
    procs = [str(d / "cgroup.procs") for d in backend.dirs(f"{topology.node_cgroup(plan, n)}/daemon")]
    cmd = [sys.executable, "-m", "corral.cluster.enter", "--netns", str(netns.NETNS_DIR / n.netns)]
    cmd += ["--hostname", n.hostname]
    for p in procs:
        cmd += ["--cgroup-procs", p]
    return [*cmd, "--"]


def _record(state: ClusterState, n: NodePlan, proc: subprocess.Popen[bytes]) -> None:
    ticks = start_ticks(proc.pid)
    state.processes[n.name] = Process(proc.pid, ticks if ticks is not None else -1)
    # The node outlives this command: nobody here will wait for it.
    proc.returncode = 0


def _start_node(state: ClusterState, backend: CgroupBackend, n: NodePlan) -> None:
    if n.role == "zookeeper":
        _start_zookeeper(state, backend, n)
    elif n.role == "master":
        _start_corral(state, backend, n, topology.master_args(state.plan, n) + _security_args(state, n))
    else:
        work = state.directory / n.name / "work"
        work.mkdir(parents=True, exist_ok=True)
        _start_corral(state, backend, n, topology.agent_args(state.plan, n, work) + _security_args(state, n))


def _security_args(state: ClusterState, n: NodePlan) -> list[str]:
    """The node's certificate, or --insecure: a plaintext cluster's nodes listen on
    and dial their namespace's address, which is not loopback."""
    return cluster_tls.node_args(state, n) if state.tls is not None else ["--insecure"]


def _start_zookeeper(state: ClusterState, backend: CgroupBackend, n: NodePlan) -> None:
    home = state.directory / n.name
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "myid").write_text(f"{n.index}\n")
    cfg = zk.write_config(
        home / "zoo.cfg", data, topology.ZK_CLIENT_PORT, topology.zookeeper_servers(state.plan), n.address
    )
    proc = zk.spawn_server(cfg, state.directory / f"{n.name}.log", prefix=_launcher(state.plan, backend, n))
    _record(state, n, proc)


def _start_corral(state: ClusterState, backend: CgroupBackend, n: NodePlan, args: list[str]) -> None:
    env = {**os.environ, "CORRAL_LOG_LEVEL": os.environ.get("CORRAL_NODE_LOG_LEVEL", "info")}
    with (state.directory / f"{n.name}.log").open("ab") as out:
        proc = subprocess.Popen(
            [*_launcher(state.plan, backend, n), *corral_command(), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    _record(state, n, proc)


def _wait(predicate: Callable[[], bool], deadline: float, what: str, state: ClusterState) -> None:
    while not predicate():
        dead = [name for name, p in state.processes.items() if not alive(p)]
        if dead:
            raise ClusterError(f"while waiting for {what}: node(s) {', '.join(sorted(dead))} exited")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _failure_logs(state: ClusterState) -> list[str]:
    """The last lines of the nodes that exited (of every node if none did)."""
    dead = [name for name, p in state.processes.items() if not alive(p)]
    lines = []
    for name in dead or list(state.processes):
        path = state.directory / f"{name}.log"
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-(5 if dead else 2) :]
            lines += [f"{name}: {line}" for line in tail]
    return lines


# -- status -------------------------------------------------------------------------


def _zk_mode(n: NodePlan) -> str:
    return zk.server_mode(topology.ZK_CLIENT_PORT, host=n.address)


def _operator(address: str, creds: Credentials | None) -> tuple[grpc.Channel, Any]:
    from corral.proto import operator_pb2_grpc
    from corral.transport import make_sync_channel

    channel = make_sync_channel(address, creds)
    return channel, operator_pb2_grpc.OperatorStub(channel)


def _master_leading(n: NodePlan, creds: Credentials | None) -> bool | None:
    """True/False from the master's GetMasterInfo; None if it does not answer."""
    from corral.proto import operator_pb2 as op

    channel, stub = _operator(f"{n.address}:{topology.MASTER_PORT}", creds)
    try:
        return bool(stub.GetMasterInfo(op.GetMasterInfoRequest(), timeout=2.0).leading)
    except grpc.RpcError:
        return None
    finally:
        channel.close()


def _leader(plan: Plan, creds: Credentials | None) -> NodePlan | None:
    for n in plan.role("master"):
        if _master_leading(n, creds):
            return n
    return None


def _agents_of(leader: NodePlan, creds: Credentials | None) -> dict[str, tuple[bool, str]]:
    """hostname -> (connected, attributes) as the leading master sees its agents."""
    from corral.proto import operator_pb2 as op

    channel, stub = _operator(f"{leader.address}:{topology.MASTER_PORT}", creds)
    try:
        resp = stub.ListAgents(op.ListAgentsRequest(), timeout=5.0)
    except grpc.RpcError:
        return {}
    finally:
        channel.close()
    return {
        a.agent_info.hostname: (a.connected, ";".join(f"{x.name}:{x.value}" for x in a.agent_info.attributes))
        for a in resp.agents
    }


def _connected_agents(plan: Plan, creds: Credentials | None) -> int:
    leader = _leader(plan, creds)
    if leader is None:
        return 0
    return sum(connected for connected, _ in _agents_of(leader, creds).values())


def status(state: ClusterState) -> list[NodeStatus]:
    """Every node: its address, whether its process runs, and its role now."""
    plan = state.plan
    creds = cluster_tls.operator_credentials(state)
    leader = _leader(plan, creds)
    agents = _agents_of(leader, creds) if leader is not None else {}
    out = []
    for n in plan.nodes:
        proc = state.processes.get(n.name)
        running = proc is not None and alive(proc)
        detail = ""
        if running and proc is not None and process_state(proc) in ("T", "t"):
            role_state = "paused"  # SIGSTOPped: asking it would only time out
        elif n.role == "zookeeper":
            role_state = _zk_mode(n) if running else "down"
        elif n.role == "master":
            leading = _master_leading(n, creds) if running else None
            role_state = "down" if not running else _MASTER_STATE[leading]
        else:
            connected, attrs = agents.get(n.hostname, (None, n.attributes))
            role_state = (
                "down"
                if not running
                else (
                    "connected" if connected else "disconnected" if connected is False else "not registered"
                )
            )
            detail = f"{n.resources} {attrs}".strip()
        out.append(
            NodeStatus(
                name=n.name,
                role=n.role,
                address=n.address,
                hostname=n.hostname,
                pid=proc.pid if proc else None,
                alive=running,
                state=role_state,
                detail=detail,
            )
        )
    return out


# -- faults: what a test (or the fault-injection harness) does to one node ----------


def _running(state: ClusterState, name: str) -> Process | None:
    state.plan.node(name)  # names the node in the error if it is not one
    proc = state.processes.get(name)
    return proc if proc is not None and alive(proc) else None


def start_node(state: ClusterState, name: str) -> Process:
    """Start a node whose process is gone again: same namespace, address, cgroup,
    work directory and arguments (an agent recovers its tasks from its work dir)."""
    if (proc := _running(state, name)) is not None:
        raise ClusterError(f"{name} is running (pid {proc.pid}); kill it first")
    _start_node(state, probe(), state.plan.node(name))
    state.save()
    return state.processes[name]


def signal_node(state: ClusterState, name: str, sig: signal.Signals) -> int:
    """Send ``sig`` to the node's process (KILL, TERM, STOP, CONT); return its pid."""
    proc = _running(state, name)
    if proc is None:
        raise ClusterError(f"{name} is not running; `corral cluster start {state.name} {name}` starts it")
    os.kill(proc.pid, sig)
    return proc.pid


def set_link(state: ClusterState, name: str, up: bool) -> None:
    """Cut (``up=False``) or restore the node's only link, its veth on the bridge: a partition."""
    n = state.plan.node(name)
    netns.Ip().run("link", "set", n.veth, "up" if up else "down")


# -- down ---------------------------------------------------------------------------


def down(state: ClusterState, keep_directory: bool = False) -> list[str]:
    """Remove everything the cluster made; return what could not be removed (empty: all gone)."""
    plan = state.plan
    ip = netns.Ip()
    _stop_processes(list(state.processes.values()))
    # Whatever else runs in the namespaces (tasks' supervisors, a node restarted by hand).
    for n in plan.nodes:
        ns = netns.netns_id(n.netns)
        if ns is not None:
            _kill_all(functools.partial(netns.pids_in, ns))
    with contextlib.suppress(CorralError, OSError):
        _remove_cgroups(probe(), plan.cgroup_root)
    problems: list[str] = []
    for n in plan.nodes:
        try:
            netns.delete_netns(ip, n.netns)
            netns.delete_link(ip, n.veth)
        except netns.NetworkError as e:
            problems.append(str(e))
    try:
        netns.delete_link(ip, plan.bridge)
    except netns.NetworkError as e:
        problems.append(str(e))
    if not keep_directory:
        shutil.rmtree(state.directory, ignore_errors=True)
    left = leftovers(state)
    if not left:
        state.remove()
    return problems + left


def _stop_processes(procs: list[Process]) -> None:
    running = [p for p in procs if alive(p)]
    for p in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while (running := [p for p in running if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p.pid, signal.SIGKILL)
    _wait_gone(running)


def _wait_gone(procs: list[Process], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)


def _kill_all(pids: Callable[[], list[int]], rounds: int = 50) -> None:
    """SIGKILL until ``pids()`` is empty (bounded: processes may fork meanwhile)."""
    for _ in range(rounds):
        found = [p for p in pids() if p != os.getpid()]
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _cgroup_tree(backend: CgroupBackend, root: str) -> list[str]:
    """Relative paths of ``root`` and every cgroup below it, deepest first."""
    paths: set[str] = set()
    for base in backend.dirs(root):
        mount = Path(str(base)[: -len(root)].rstrip("/"))
        if not base.is_dir():
            continue
        for dirpath, _dirs, _files in os.walk(base):
            paths.add(str(Path(dirpath).relative_to(mount)))
    return sorted(paths, key=lambda p: p.count("/"), reverse=True)


def _cgroup_pids(backend: CgroupBackend, path: str) -> list[int]:
    return sorted(backend.procs(path))


def _remove_cgroups(backend: CgroupBackend, root: str) -> None:
    for path in _cgroup_tree(backend, root):
        _kill_all(functools.partial(_cgroup_pids, backend, path))
        for _ in range(50):
            if backend.remove(path):
                break
            time.sleep(0.1)


def leftovers(state: ClusterState) -> list[str]:
    """What of the cluster still exists: processes, namespaces, links, cgroups."""
    plan = state.plan
    left = [f"process {name} (pid {p.pid})" for name, p in state.processes.items() if alive(p)]
    for n in plan.nodes:
        if netns.netns_exists(n.netns):
            left.append(f"network namespace {n.netns}")
        if netns.link_exists(n.veth):
            left.append(f"veth {n.veth}")
    if netns.link_exists(plan.bridge):
        left.append(f"bridge {plan.bridge}")
    with contextlib.suppress(CorralError, OSError):
        left += [f"cgroup {d}" for d in probe().dirs(plan.cgroup_root) if d.exists()]
    return left
