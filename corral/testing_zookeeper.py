"""Real ZooKeeper servers (Debian's `zookeeper` package) for tests and benchmarks.

Started in the foreground on a free loopback port with a private data dir and
stopped by its pid (FACTS.md has the measurements behind these settings).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

JARS = ("/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar")


def available() -> str | None:
    """None if a server can be started here, else the reason it cannot."""
    if shutil.which("java") is None:
        return "java is not installed (apt-get install zookeeper brings it)"
    missing = [j for j in JARS if not Path(j).exists()]
    if missing:
        return f"ZooKeeper is not installed ({missing[0]} missing): apt-get install zookeeper"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def four_letter(port: int, word: str, timeout: float = 1.0, host: str = "127.0.0.1") -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(word.encode())
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    return b"".join(chunks).decode(errors="replace")


def server_mode(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> str:
    """A server's role from its ``srvr`` answer: ``leader``, ``follower`` or
    ``standalone``; ``not serving`` (up, no quorum) or ``down`` (no answer)."""
    try:
        out = four_letter(port, "srvr", timeout=timeout, host=host)
    except OSError:
        return "down"
    for line in out.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return "not serving"


def write_config(
    path: Path, data: Path, client_port: int, servers: Sequence[str] = (), address: str = "127.0.0.1"
) -> Path:
    """A zoo.cfg for tests: fast ticks, one address (loopback by default), no admin server."""
    lines = [
        "tickTime=500",
        "initLimit=10",
        "syncLimit=5",
        f"dataDir={data}",
        f"clientPort={client_port}",
        f"clientPortAddress={address}",
        "maxClientCnxns=0",
        "admin.enableServer=false",
        "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,conf",
        # Without these a client asking for a 2 s session silently gets 4 s.
        "minSessionTimeout=1000",
        "maxSessionTimeout=60000",
        *servers,
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def spawn_server(cfg: Path, log_path: Path, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start one server in the foreground, in its own process group (``prefix``:
    a launcher to run it through, e.g. into a network namespace)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                *prefix,
                "java",
                "-Xmx256m",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
                ":".join(JARS),
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                str(cfg),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class ZooKeeperServer:
    """One standalone server. ``hosts`` is the kazoo connection string."""

    def __init__(self, work_dir: Path, port: int | None = None) -> None:
        self.work_dir = work_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        data = self.work_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        cfg = write_config(self.work_dir / "zoo.cfg", data, self.port)
        self.proc = spawn_server(cfg, self.work_dir / "zookeeper.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ZooKeeper exited with {self.proc.returncode}: "
                    + (self.work_dir / "zookeeper.log").read_text()[-2000:]
                )
            try:
                if four_letter(self.port, "ruok") == "imok":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ZooKeeper did not answer ruok on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class ZooKeeperEnsemble:
    """Three (or n) servers on loopback forming one quorum (FACTS.md recipe)."""

    def __init__(self, work_dir: Path, size: int = 3) -> None:
        self.work_dir = work_dir
        self.size = size
        self.ports = [
            (free_port(), free_port(), free_port()) for _ in range(size)
        ]  # client, quorum, election
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def hosts(self) -> str:
        return ",".join(f"127.0.0.1:{client}" for client, _, _ in self.ports)

    def _cfg(self, i: int) -> Path:
        node = self.work_dir / f"node{i + 1}"
        data = node / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / "myid").write_text(f"{i + 1}\n")
        servers = [f"server.{j + 1}=127.0.0.1:{q}:{e}" for j, (_, q, e) in enumerate(self.ports)]
        return write_config(node / "zoo.cfg", data, self.ports[i][0], servers)

    def start_node(self, i: int) -> None:
        self.procs[i] = spawn_server(self._cfg(i), self.work_dir / f"node{i + 1}.log")

    def stop_node(self, i: int) -> None:
        proc = self.procs[i]
        self.procs[i] = None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGKILL)  # a lost node, not a polite one
        proc.wait()

    def mode(self, i: int) -> str:
        return server_mode(self.ports[i][0])

    def wait_serving(self, nodes: list[int], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.mode(i) in ("leader", "follower") for i in nodes):
                return
            time.sleep(0.1)
        raise RuntimeError(f"ensemble nodes {nodes} not serving: {[self.mode(i) for i in nodes]}")

    def start(self) -> None:
        for i in range(self.size):
            self.start_node(i)
        self.wait_serving(list(range(self.size)))

    def stop(self) -> None:
        for i in range(self.size):
            self.stop_node(i)
