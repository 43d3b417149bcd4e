"""Failover time: kill -9 the leading master and time the recovery.

Starts a ZooKeeper server, three `corral master --zk` processes, N `corral
agent` processes and a framework (this process, through the SDK) that keeps
being offered resources. Then `kill -9` of the leader, and prints, from that
moment:

  (a) a new leader elected (a master answers GetMasterInfo with leading),
  (b) every agent re-registered with it,
  (c) the framework re-subscribed and receiving offers again.

    python bench/failover.py --agents 4 [--session 5] [--json PATH]

Everything talks over loopback only. Needs root (agents make cgroups).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import grpc.aio

import corral  # noqa: F401  (before grpc: see corral/__init__.py)
from corral.frameworks import Offer, Scheduler, SchedulerDriver
from corral.frameworks.types import MasterInfo
from corral.proto import operator_pb2, operator_pb2_grpc
from corral.testing import corral_command, terminate
from corral.testing_zookeeper import ZooKeeperServer, free_port


class Watcher(Scheduler):
    """Declines every offer (briefly) and notes when offers arrive."""

    def __init__(self) -> None:
        self.subscriptions = 0
        self.last_offer_at = 0.0

    async def registered(self, driver: SchedulerDriver, framework_id: str, master: MasterInfo) -> None:
        self.subscriptions += 1

    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        self.last_offer_at = time.monotonic()
        driver.decline(offers, refuse_s=0.2)


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def master_state(address: str) -> tuple[bool, int]:
    """(leading, connected agents) of one master; (False, 0) if it cannot say."""
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = operator_pb2_grpc.OperatorStub(channel)
            info = await stub.GetMasterInfo(operator_pb2.GetMasterInfoRequest(), timeout=0.5)
            if not info.leading:
                return False, 0
            agents = await stub.ListAgents(operator_pb2.ListAgentsRequest(), timeout=0.5)
            return True, sum(a.connected for a in agents.agents)
    except grpc.aio.AioRpcError:
        return False, 0


async def run(args: argparse.Namespace, work: Path) -> dict[str, float]:
    zk = ZooKeeperServer(work / "zk")
    zk.start()
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "CORRAL_LOG_LEVEL": "warning"}
    try:
        url = f"zk://{zk.hosts}/bench"
        masters: dict[int, subprocess.Popen[bytes]] = {}
        for _ in range(3):
            port = free_port()
            p = spawn(
                [
                    *corral_command(),
                    "master",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--zk",
                    url,
                    "--zk-session-timeout",
                    str(args.session),
                    "--allocation-interval",
                    "0.2",
                ],
                env,
            )
            masters[port] = p
            procs.append(p)
        for i in range(args.agents):
            procs.append(
                spawn(
                    [
                        *corral_command(),
                        "agent",
                        "--master",
                        url,
                        "--work-dir",
                        str(work / f"agent{i}"),
                        "--resources",
                        "cpus:1;mem:512",
                        "--hostname",
                        f"agent{i}",
                        "--cgroup-prefix",
                        f"corral-bench-{os.getpid()}/a{i}",
                    ],
                    env,
                )
            )
        scheduler = Watcher()
        driver = SchedulerDriver(scheduler, name="bench-failover", master=url, failover_timeout_s=60)
        runner = asyncio.create_task(driver.run())

        async def leader() -> tuple[int, int] | None:
            for port in masters:
                leading, agents = await master_state(f"127.0.0.1:{port}")
                if leading:
                    return port, agents
            return None

        deadline = time.monotonic() + 60
        while True:
            found = await leader()
            if found and found[1] == args.agents and scheduler.last_offer_at:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"cluster did not come up: leader={found}")
            await asyncio.sleep(0.1)
        old_port = found[0]
        masters[old_port].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        figures: dict[str, float] = {}
        while len(figures) < 3:
            now = time.monotonic()
            if now - killed > args.session + 60:
                raise SystemExit(f"no full recovery: {figures}")
            found = await leader()
            if found and found[0] != old_port:
                figures.setdefault("a_new_leader_s", now - killed)
                if found[1] == args.agents:
                    figures.setdefault("b_agents_reregistered_s", now - killed)
            if scheduler.subscriptions >= 2 and scheduler.last_offer_at > killed:
                figures.setdefault("c_framework_offered_s", scheduler.last_offer_at - killed)
            await asyncio.sleep(0.02)
        driver.teardown()
        async with asyncio.timeout(10):
            await runner
        return {k: round(v, 2) for k, v in sorted(figures.items())}
    finally:
        terminate(procs)
        zk.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=4)
    ap.add_argument(
        "--session", type=float, default=5.0, help="ZooKeeper session timeout, seconds (default: corral's)"
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="corral-failover-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    result = {"session_timeout_s": args.session, "agents": args.agents, **result}
    for key, value in result.items():
        print(f"{key:<26} {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
