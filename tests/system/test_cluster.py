"""`corral cluster up|status|down` for real: ZooKeeper, 3 masters and 2 agents,
each a process in its own network namespace on a bridge the cluster makes.
A batch job runs across the agents, `kill -9` of the leading master brings
another leader, single-node faults work (restart, pause, link down), and
`down` leaves no namespace, link, process, cgroup or mount.
Traffic goes only to addresses on the cluster's own bridge."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from corral import testing_zookeeper as zkserver
from corral.testing import corral_command
from corral.zk import parse_zk_url

pytestmark = [pytest.mark.root, pytest.mark.slow]


@dataclass
class Cluster:
    name: str
    env: dict[str, str]
    state: dict[str, object]  # the state file's JSON, read right after up

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*corral_command(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def status(self) -> dict[str, dict[str, object]]:
        res = self.run("cluster", "status", self.name, "--json")
        assert res.returncode == 0, res.stderr
        return {n["name"]: n for n in json.loads(res.stdout)["nodes"]}

    def leader(self) -> str | None:
        leading = [name for name, n in self.status().items() if n["state"] == "leading"]
        assert len(leading) <= 1, f"two masters lead: {leading}"
        return leading[0] if leading else None


def _requirements() -> None:
    reason = zkserver.available() or (None if shutil.which("ip") else "iproute2 is not installed")
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must provide this: {reason}")
        pytest.skip(reason)


def _up(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    env = {**os.environ, "CORRAL_HOME": str(tmp_path / "home"), "CORRAL_LOG_LEVEL": "warning"}
    res = subprocess.run(
        [*corral_command(), "cluster", "up", "--name", name, *args],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip
    return res, env


def _down(name: str, env: dict[str, str]) -> None:
    """Cleanup even when the test failed (and whatever `up` left if it failed half-way)."""
    if not (Path(env["CORRAL_HOME"]) / "clusters" / f"{name}.json").exists():
        return
    subprocess.run([*corral_command(), "cluster", "down", name], env=env, timeout=120, check=False)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    _requirements()
    name = f"t{os.getpid()}"
    res, env = _up(
        tmp_path, name,
        "--masters", "3", "--agents", "2", "--zk-session-timeout", "2",
        "--agent-resources", "cpus:1;mem:512;disk:1000;ports:[31000-31100]",
        "--agent-attributes", "rack:r1,zone:a", "--agent-attributes", "rack:r2,zone:b",
    )  # fmt: skip
    try:
        assert res.returncode == 0, f"cluster up failed:\n{res.stdout}\n{res.stderr}"
        print(res.stdout)
        state = json.loads((Path(env["CORRAL_HOME"]) / "clusters" / f"{name}.json").read_text())
        yield Cluster(name, env, state)
    finally:
        _down(name, env)


def _ip(*args: str) -> str:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=True, timeout=30).stdout


def _nothing_left(state: dict[str, object], home: Path) -> None:
    """Enumerated independently of corral's own check."""
    plan = state["plan"]
    assert isinstance(plan, dict)
    name = plan["name"]
    assert f"corral-{name}-" not in _ip("netns", "list")
    links = _ip("-o", "link")
    link_names = {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()}
    ours = {plan["bridge"], *(n["veth"] for n in plan["nodes"])}
    assert not (ours & link_names), f"links left: {ours & link_names}"
    subnet_prefix = plan["subnet"].rsplit(".", 1)[0] + "."
    assert subnet_prefix not in _ip("-o", "-4", "addr")
    cluster_dir = str(home / "clusters" / name)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if "State:\tZ" in status:
            continue
        assert cluster_dir not in cmdline, f"process left: {entry.name} {cmdline}"
        assert subnet_prefix not in cmdline, f"process left: {entry.name} {cmdline}"
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/corral-cluster-{name}")]
    assert cgroups == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"corral-{name}-" not in mounts
    assert not (home / "clusters" / f"{name}.json").exists()
    assert not Path(cluster_dir).exists()


def test_up_job_across_agents_failover_faults_and_down_leaves_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    nodes = cluster.status()
    assert [n for n, s in nodes.items() if not s["alive"]] == []
    assert {nodes[f"zk{i}"]["state"] for i in (1, 2, 3)} <= {"leader", "follower"}
    assert sum(nodes[f"zk{i}"]["state"] == "leader" for i in (1, 2, 3)) == 1
    assert {nodes[f"agent{i}"]["state"] for i in (1, 2)} == {"connected"}
    assert "rack:r2;zone:b" in str(nodes["agent2"]["detail"])
    leader = cluster.leader()
    assert leader is not None

    # Mutual TLS by default: the CLI above used the recorded operator certificate;
    # a client without one is refused at the handshake.
    assert cluster.state["tls"], "cluster up recorded no TLS files"
    master = f"{nodes[leader]['address']}:5050"
    plain = cluster.run("agents", "--master", master)  # not the recorded zk:// URL: no certificate
    assert plain.returncode != 0
    assert "cannot reach the master" in plain.stderr
    # ...and its ZooKeeper tree is the masters' own: anyone reads the leader,
    # nobody else can pose as one or read the registry (corral/zk.py, "Access").
    plan = cluster.state["plan"]
    assert isinstance(plan, dict)
    url = parse_zk_url(str(plan["zk_url"]))
    anyone = KazooClient(hosts=url.hosts)
    anyone.start(timeout=10)
    try:
        assert anyone.get_children(url.leader_dir)
        with pytest.raises(NoAuthError):
            anyone.create(f"{url.leader_dir}/member_", b"{}", ephemeral=True, sequence=True)
        with pytest.raises(NoAuthError):
            anyone.get_children(f"{url.path}/registry/agents")
    finally:
        anyone.stop()
        anyone.close()

    # A batch job: each task needs most of an agent's CPU, so the two run on both agents,
    # and each prints the address of the namespace it ran in.
    job = tmp_path / "job.toml"
    job.write_text(
        'name = "spread"\n[[tasks]]\nname = "where"\ncount = 2\ncpus = 0.8\nmem = 32\n'
        "command = \"sleep 1; ip -4 -o addr show dev eth0 | awk '{print $4}'\"\n"
    )
    res = cluster.run("submit", "--local", "--cluster", cluster.name, "--output", str(job))
    assert res.returncode == 0, res.stdout + res.stderr
    agents = {nodes["agent1"]["address"], nodes["agent2"]["address"]}
    assert {a for a in agents if f"{a}/24" in res.stdout} == agents, res.stdout
    agents_view = cluster.run("agents", "--cluster", cluster.name)
    assert "rack:r1;zone:a" in agents_view.stdout
    assert "rack:r2;zone:b" in agents_view.stdout

    # kill -9 of the leading master's process: another one leads, and clients follow.
    pid = nodes[leader]["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    while (new := cluster.leader()) in (None, leader):
        assert time.monotonic() - killed_at < 30, f"no new leader: {cluster.status()}"
        time.sleep(0.3)
    print(f"new leader {new} {time.monotonic() - killed_at:.1f}s after kill -9 of {leader}")
    assert cluster.status()[leader]["state"] == "down"
    after = cluster.run("run", "--cluster", cluster.name, "--", "echo", "after")
    assert after.returncode == 0, after.stderr
    assert after.stdout == "after\n"

    # Faults on one node: the killed master starts again as a standby; a paused
    # agent shows as paused; a node's link goes down and up.
    res = cluster.run("cluster", "start", cluster.name, leader)
    assert res.returncode == 0, res.stderr
    restarted_at = time.monotonic()
    while cluster.status()[leader]["state"] != "standby":
        assert time.monotonic() - restarted_at < 60, f"{leader} did not come back: {cluster.status()}"
        time.sleep(0.5)
    assert cluster.run("cluster", "kill", cluster.name, "agent2", "--signal", "STOP").returncode == 0
    assert cluster.status()["agent2"]["state"] == "paused"
    assert cluster.run("cluster", "kill", cluster.name, "agent2", "--signal", "CONT").returncode == 0
    plan = cluster.state["plan"]
    assert isinstance(plan, dict)
    veth = next(n["veth"] for n in plan["nodes"] if n["name"] == "agent1")
    assert cluster.run("cluster", "link", cluster.name, "agent1", "down").returncode == 0
    assert "state DOWN" in _ip("-o", "link", "show", veth)
    assert cluster.run("cluster", "link", cluster.name, "agent1", "up").returncode == 0
    assert ",UP" in _ip("-o", "link", "show", veth)

    started = time.monotonic()
    down = cluster.run("cluster", "down", cluster.name, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    print(f"down in {time.monotonic() - started:.1f}s")
    _nothing_left(cluster.state, Path(cluster.env["CORRAL_HOME"]))


def test_a_failed_up_removes_what_it_made(tmp_path: Path) -> None:
    """The cluster cannot be ready in 0.1 s: `up` fails, naming what it waited
    for, and takes down the namespaces, bridge and processes it had made."""
    _requirements()
    name = f"f{os.getpid()}"
    res, env = _up(tmp_path, name, "--masters", "1", "--agents", "1", "--zk-nodes", "1", "--timeout", "0.1")
    try:
        assert res.returncode != 0
        assert "timed out waiting for" in res.stderr, res.stderr
        assert not (tmp_path / "home" / "clusters" / f"{name}.json").exists()
        netns_list = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout
        assert f"corral-{name}-" not in netns_list
        assert list(Path("/sys/fs/cgroup").glob(f"*/corral-cluster-{name}")) == []
    finally:
        _down(name, env)
