"""Planning a test cluster (pure) and its state file."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.cluster import topology
from corral.cluster.state import ClusterState, Process, alive, list_clusters, start_ticks, state_path
from corral.cluster.topology import ClusterSpec, TopologyError

SUBNET = ipaddress.IPv4Network("10.213.7.0/24")
SHARES = ["cpus:1;mem:1024"] * 5


def _plan(**kw: object) -> topology.Plan:
    spec = ClusterSpec(**{"name": "dev", **kw})  # type: ignore[arg-type]
    return topology.plan(spec, SUBNET, SHARES[: spec.agents] or ["cpus:1"])


def test_layout_addresses_names_and_zk_url() -> None:
    p = _plan(masters=3, agents=5)
    names = ["zk1", "zk2", "zk3", "master1", "master2", "master3"] + [f"agent{i}" for i in range(1, 6)]
    assert [n.name for n in p.nodes] == names
    assert p.bridge == "crl7br"
    assert p.bridge_address == "10.213.7.1"
    assert p.node("zk1").address == "10.213.7.11"
    assert p.node("master3").address == "10.213.7.23"
    assert p.node("agent5").address == "10.213.7.105"
    assert p.zk_url == "zk://10.213.7.11:2181,10.213.7.12:2181,10.213.7.13:2181/corral"
    assert p.node("agent2").netns == "corral-dev-agent2"
    assert p.node("agent2").hostname == "dev-agent2"
    assert len({n.address for n in p.nodes}) == len(p.nodes)
    assert len({n.veth for n in p.nodes} | {p.bridge}) == len(p.nodes) + 1
    assert topology.zookeeper_servers(p) == [
        "server.1=10.213.7.11:2888:3888",
        "server.2=10.213.7.12:2888:3888",
        "server.3=10.213.7.13:2888:3888",
    ]


def test_interface_names_fit_the_kernel_limit() -> None:
    p = topology.plan(
        ClusterSpec(name="a" * 20, masters=9, agents=150, zk_nodes=7),
        ipaddress.IPv4Network("10.213.255.0/24"),
        ["cpus:1"],
    )
    assert max(len(n.veth) for n in p.nodes) <= 15
    assert len(p.bridge) <= 15
    assert p.node("agent150").address == "10.213.255.250"


def test_external_zookeeper_starts_no_zk_nodes() -> None:
    p = _plan(zk="zk://192.0.2.9:2181/x")
    assert not p.role("zookeeper")
    assert not p.own_zookeeper
    assert p.zk_url == "zk://192.0.2.9:2181/x"


def test_attributes_are_dealt_in_turn_and_resources_per_agent() -> None:
    p = _plan(agents=3, agent_attributes=("rack:r1,zone:a", "rack:r2;zone:b"), agent_resources=("cpus:2",))
    assert [n.attributes for n in p.role("agent")] == ["rack:r1;zone:a", "rack:r2;zone:b", "rack:r1;zone:a"]
    assert {n.resources for n in p.role("agent")} == {"cpus:2"}
    p = _plan(agents=2, agent_resources=("cpus:1", "cpus:3"))
    assert [n.resources for n in p.role("agent")] == ["cpus:1", "cpus:3"]


def test_commands_of_masters_and_agents() -> None:
    p = _plan(agents=1, agent_attributes=("rack:r1",), zk_session_timeout_s=2.0)
    assert topology.master_args(p, p.node("master1")) == [
        "master", "--listen", "10.213.7.21:5050", "--zk", p.zk_url, "--zk-session-timeout", "2",
    ]  # fmt: skip
    args = topology.agent_args(p, p.node("agent1"), Path("/w"))
    assert args[args.index("--cgroup-prefix") + 1] == "corral-cluster-dev/agent1/containers"
    assert args[args.index("--attributes") + 1] == "rack:r1"
    assert args[args.index("--hostname") + 1] == "dev-agent1"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"name": "Dev"}, "--name 'Dev'"),
        ({"name": "1x"}, "--name '1x'"),
        ({"name": "a" * 21}, "--name"),
        ({"masters": 0}, "--masters: must be 1..9, got 0"),
        ({"agents": 151}, "--agents: must be 1..150, got 151"),
        ({"zk_nodes": 2}, "--zk-nodes: must be odd"),
        ({"agents": 3, "agent_resources": ("cpus:1", "cpus:2")}, "--agent-resources: give one"),
        ({"agent_attributes": ("rack",)}, "--agent-attributes 'rack'"),
        ({"agent_resources": ("cpus:x",)}, "--agent-resources 'cpus:x'"),
        ({"zk_session_timeout_s": 0.0}, "--zk-session-timeout"),
    ],
)
def test_bad_requests_name_the_option(kw: dict[str, object], message: str) -> None:
    with pytest.raises(TopologyError, match=message.replace("[", r"\[").replace("(", r"\(")):
        _plan(**kw)


def test_choose_subnet_skips_every_network_in_use() -> None:
    used = [ipaddress.IPv4Network("10.213.0.0/24"), ipaddress.IPv4Network("10.213.1.77/32")]
    assert topology.choose_subnet(used) == ipaddress.IPv4Network("10.213.2.0/24")
    assert topology.choose_subnet([ipaddress.IPv4Network("192.0.2.0/24")]).network_address.packed[2] == 0
    with pytest.raises(TopologyError, match="every /24"):
        topology.choose_subnet([ipaddress.IPv4Network("10.0.0.0/8")])


@given(st.lists(st.builds(ipaddress.IPv4Network, st.sampled_from([f"10.213.{i}.0/24" for i in range(40)]))))
def test_the_chosen_subnet_overlaps_nothing_in_use(used: list[ipaddress.IPv4Network]) -> None:
    chosen = topology.choose_subnet(used)
    assert chosen.subnet_of(topology.BASE)
    assert not any(chosen.overlaps(n) for n in used)


def test_state_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    p = _plan(agent_attributes=("rack:r1",))
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    state = ClusterState(
        plan=p, directory=tmp_path / "d", created_at=1.0, processes={"zk1": Process(os.getpid(), ticks)}
    )
    assert state.save() == state_path("dev")
    loaded = ClusterState.load("dev")
    assert loaded.plan == p
    assert loaded.processes == state.processes
    assert list_clusters() == ["dev"]
    assert alive(loaded.processes["zk1"])
    assert not alive(Process(os.getpid(), ticks + 1))  # same pid, another process
    loaded.remove()
    with pytest.raises(TopologyError, match="no cluster named 'dev'"):
        ClusterState.load("dev")


def test_clients_find_a_cluster_by_name_or_as_the_only_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import click

    from corral.cli.discovery import CLUSTER_META_KEY, ClusterNotFoundError, resolve_master

    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    monkeypatch.delenv("CORRAL_MASTER", raising=False)
    with pytest.raises(ClusterNotFoundError, match="corral cluster up"):
        resolve_master(None)
    ClusterState(plan=_plan(), directory=tmp_path / "d", created_at=1.0).save()
    assert resolve_master(None) == _plan().zk_url  # the only cluster, no flag needed
    assert resolve_master("h:1") == "h:1"
    with click.Context(click.Command("x")) as ctx:
        ctx.meta[CLUSTER_META_KEY] = "dev"
        assert resolve_master("h:1") == _plan().zk_url  # --cluster wins
        ctx.meta[CLUSTER_META_KEY] = "nope"
        with pytest.raises(ClusterNotFoundError, match="no cluster named 'nope' \\(known: dev\\)"):
            resolve_master(None)


def test_the_launcher_names_what_it_could_not_enter(tmp_path: Path) -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "corral.cluster.enter", "--netns", str(tmp_path / "none"), "--hostname", "h",
         "--", "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert res.returncode == 125
    assert f"cannot start true in {tmp_path / 'none'}" in res.stderr


def test_cluster_list_takes_o_and_an_unknown_cluster_exits_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import subprocess

    from corral.testing import corral_command

    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))  # the state saved here, and the CLI's
    env = dict(os.environ)

    def corral(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*corral_command(), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )

    assert corral("cluster", "list", "-o", "json").stdout.strip() == "[]"
    ClusterState(plan=_plan(), directory=tmp_path / "d", created_at=1.0).save()
    listed = corral("cluster", "list")  # piped: a header line, then tab-separated
    assert listed.stdout.splitlines() == ["name\tsubnet\tzk", f"dev\t{SUBNET}\t{_plan().zk_url}"]
    assert json.loads(corral("cluster", "list", "-o", "json").stdout) == [
        {"name": "dev", "subnet": str(SUBNET), "zk": _plan().zk_url}
    ]
    missing = corral("cluster", "status", "nope")
    assert missing.returncode == 4, missing.stderr  # not found, not a usage error
    assert "no cluster named 'nope' (known: dev)" in missing.stderr
