"""docker/ for real (opt-in: ``CORRAL_TEST_DOCKER=1 pytest -m docker``, about
6 minutes here, most of it debootstrap; ``CORRAL_DOCKER_BASE_TAR=rootfs.tar``
imports a saved base instead).

A private dockerd (its own data and exec roots, no iptables, no docker0) builds
the base image without any registry and the corral image from this checkout,
brings the compose cluster up (3 ZooKeeper nodes, 3 masters, 2 agents) on a
network of its own, runs a batch job across the agents from this host, kills
the leading master's container while the job runs and sees the job finish.
Then it takes everything down and checks that no container, image, network,
volume, daemon, link, mount or cgroup is left.

Needs ``apt-get install docker.io docker-compose debootstrap``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.cluster.netns import Ip, host_networks
from corral.testing import corral_command

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "docker-compose.yml"
PROJECT = "corraltest"
pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.docker,
    pytest.mark.skipif(
        not os.environ.get("CORRAL_TEST_DOCKER"),
        reason="opt-in: CORRAL_TEST_DOCKER=1 (builds images: minutes)",
    ),
    pytest.mark.timeout(1800),
]
CREATED_BY_DOCKERD = [Path("/run/docker"), Path("/run/containerd")]


@dataclass
class Docker:
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check:
            assert res.returncode == 0, f"{' '.join(args)}:\n{res.stdout}\n{res.stderr}"
        return res

    def compose(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            "docker-compose", "-f", str(COMPOSE), "-p", PROJECT, *args, timeout=timeout, check=check
        )


def _links() -> set[str]:
    return {p.name for p in Path("/sys/class/net").iterdir()}


def _docker_cgroups() -> set[Path]:
    return set(Path("/sys/fs/cgroup").glob("*/docker"))


def _free_net() -> str:
    used = host_networks(Ip())
    for net in ipaddress.IPv4Network("10.214.0.0/16").subnets(new_prefix=24):
        if not any(net.overlaps(u) for u in used):
            return str(net.network_address).rsplit(".", 1)[0]
    raise AssertionError("no free /24 in 10.214.0.0/16")


def _stop_daemon(d: Docker) -> None:
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(d.proc.pid, signal.SIGKILL)
            d.proc.wait()


@pytest.fixture
def docker() -> Iterator[Docker]:
    missing = [c for c in ("dockerd", "docker", "docker-compose", "debootstrap") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}: apt-get install docker.io docker-compose debootstrap")
    links, cgroups = _links(), _docker_cgroups()
    existed = {p for p in CREATED_BY_DOCKERD if p.exists()}
    root = Path(tempfile.mkdtemp(prefix="corral-docker-"))
    sock = root / "docker.sock"
    with (root / "dockerd.log").open("wb") as log:
        proc = subprocess.Popen(
            ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "-H", f"unix://{sock}", "--pidfile", str(root / "docker.pid"),
             "--iptables=false", "--ip-masq=false", "--bridge=none"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    d = Docker(root, {**os.environ, "DOCKER_HOST": f"unix://{sock}"}, proc)
    try:
        deadline = time.monotonic() + 60
        while d.run("docker", "version", check=False, timeout=30).returncode != 0:
            assert proc.poll() is None, (root / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "dockerd did not answer within 60 s"
            time.sleep(0.5)
        yield d
    finally:
        if proc.poll() is None:
            d.compose("down", "-v", "--rmi", "all", "--timeout", "5", check=False)
        _stop_daemon(d)
        shutil.rmtree(root, ignore_errors=True)
        for p in CREATED_BY_DOCKERD:
            if p not in existed:
                shutil.rmtree(p, ignore_errors=True)
        for c in _docker_cgroups() - cgroups:
            for sub in sorted(c.glob("**/"), key=lambda x: len(x.parts), reverse=True):
                sub.rmdir()
        assert _links() - links == set(), f"links left: {_links() - links}"
        mounts = [m for m in Path("/proc/self/mountinfo").read_text().splitlines() if str(root) in m]
        assert mounts == [], f"mounts left: {mounts}"
        assert _processes_under(root) == [], f"processes left: {_processes_under(root)}"


def _processes_under(root: Path) -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(root) in cmdline:
                out.append(f"{entry.name} {cmdline}")
    return out


def _apt_mirror() -> str:
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        text = source.read_text() if source.is_file() else ""
        if m := re.search(r"(?:URIs:\s*|deb\s+)(https?://\S+/debian)\b", text):
            return m.group(1)
    return "http://deb.debian.org/debian"


def _corral(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*corral_command(), *args], capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "CORRAL_LOG_LEVEL": "warning"},
    )  # fmt: skip


def test_compose_cluster_runs_a_job_through_a_leader_kill(docker: Docker, tmp_path: Path) -> None:
    started = time.monotonic()
    base_tar = os.environ.get("CORRAL_DOCKER_BASE_TAR")
    if base_tar:
        docker.run("sh", "-c", f"docker import - corral-base:bookworm < {base_tar}")
    else:
        docker.run(str(REPO / "docker" / "build-base.sh"), _apt_mirror(), timeout=1200)
    based = time.monotonic()
    docker.env["PYTHON"] = sys.executable
    docker.run(str(REPO / "docker" / "build.sh"), timeout=900)
    built = time.monotonic()

    net = _free_net()
    docker.env.update(CORRAL_NET=net, CORRAL_AGENT_RESOURCES="cpus:1;mem:512;disk:1000;ports:[31000-31100]")
    docker.compose("up", "-d", "--scale", "agent=2")
    zk = f"zk://{net}.11:2181,{net}.12:2181,{net}.13:2181/corral"
    deadline = time.monotonic() + 180
    while (res := _corral("agents", "--master", zk)).stdout.count("connected") < 2:
        assert time.monotonic() < deadline, f"agents did not register: {res.stdout} {res.stderr}"
        time.sleep(1)
    ready = time.monotonic()

    job = tmp_path / "job.toml"
    job.write_text(
        'name = "docker"\n[[tasks]]\nname = "where"\ncount = 2\ncpus = 0.8\nmem = 32\n'
        'command = "sleep 8; cat /etc/hostname"\n'
    )
    submit = subprocess.Popen(
        [*corral_command(), "submit", "--master", zk, "--output", str(job)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CORRAL_LOG_LEVEL": "warning"},
    )  # fmt: skip
    try:
        time.sleep(4)  # the tasks are running (they sleep 8 s)
        leader = re.search(r"agents of (\S+):5050", _corral("agents", "--master", zk).stdout)
        assert leader is not None
        index = int(leader.group(1).rsplit(".", 1)[1]) - 20
        docker.run("docker", "kill", f"{PROJECT}_master{index}_1")
        out, _ = submit.communicate(timeout=180)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()
    assert submit.returncode == 0, out
    assert out.count("FINISHED") >= 2, out
    agents = {line.split()[0] for line in docker.compose("ps", "-q", "agent").stdout.splitlines()}
    assert {a[:12] for a in agents} <= set(re.findall(r"\b[0-9a-f]{12}\b", out)), out
    after = re.search(r"agents of (\S+):5050", _corral("agents", "--master", zk).stdout)
    assert after is not None
    assert after.group(1) != leader.group(1)

    docker.compose("down", "-v", "--rmi", "all", "--timeout", "5")
    docker.run("docker", "rmi", "corral-base:bookworm")
    assert docker.run("docker", "ps", "-aq").stdout.strip() == ""
    assert docker.run("docker", "images", "-q").stdout.strip() == ""
    assert docker.run("docker", "volume", "ls", "-q").stdout.strip() == ""
    networks = docker.run("docker", "network", "ls", "--format", "{{.Name}}").stdout.split()
    assert sorted(networks) == ["host", "none"]
    print(
        f"base image {based - started:.0f}s, corral image {built - based:.0f}s, "
        f"compose cluster ready {ready - built:.0f}s, job through a leader kill ok"
    )
