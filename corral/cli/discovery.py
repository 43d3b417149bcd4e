"""How clients find a master: ``--master``, then ``$CORRAL_MASTER``, then the
file ``corral local`` writes (so the local cluster needs no flags)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import click

from corral.detector import ZooKeeperDetector
from corral.errors import CorralError
from corral.zk import is_zk_url, parse_zk_url

#: Where ``--cluster NAME`` leaves its value in the click context (see resolve_master).
CLUSTER_META_KEY = "corral.cluster"


class ClusterNotFoundError(CorralError):
    """No master address was given and no local cluster is running."""


def state_dir() -> Path:
    base = os.environ.get("CORRAL_HOME")
    return Path(base) if base else Path.home() / ".corral"


def local_file() -> Path:
    return state_dir() / "local.json"


def write_local(master: str, work_dir: Path) -> Path:
    path = local_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"master": master, "pid": os.getpid(), "work_dir": str(work_dir)}))
    tmp.replace(path)
    return path


def remove_local() -> None:
    path = local_file()
    try:
        data = json.loads(path.read_text())
        if data.get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def resolve_master(flag: str | None) -> str:
    """The master to talk to: ``--cluster NAME``, ``--master``, ``$CORRAL_MASTER``,
    the running ``corral local``, then the only ``corral cluster up`` cluster."""
    ctx = click.get_current_context(silent=True)
    cluster = ctx.meta.get(CLUSTER_META_KEY) if ctx is not None else None
    if cluster:
        return _cluster_master(cluster)
    if flag:
        return flag.removeprefix("grpc://")
    env = os.environ.get("CORRAL_MASTER")
    if env:
        return env
    path = local_file()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        from corral.cluster.state import list_clusters

        clusters = list_clusters()
        if len(clusters) == 1:
            return _cluster_master(clusters[0])
        raise ClusterNotFoundError(
            "no cluster found: start one with `corral local` or `corral cluster up`, or pass "
            "--master HOST:PORT (or set CORRAL_MASTER)"
            + (f", or --cluster NAME (one of {', '.join(clusters)})" if clusters else "")
        ) from None
    except ValueError:
        raise ClusterNotFoundError(f"{path} is corrupt; remove it and restart `corral local`") from None
    pid = int(data.get("pid", 0))
    if pid and not _alive(pid):
        raise ClusterNotFoundError(
            f"the local cluster recorded in {path} (pid {pid}) is not running; start one with `corral local`"
        )
    return str(data["master"])


def _cluster_master(name: str) -> str:
    """The zk:// URL of a ``corral cluster up`` cluster, from its state file."""
    from corral.cluster.state import ClusterState
    from corral.cluster.topology import TopologyError

    try:
        return ClusterState.load(name).plan.zk_url
    except TopologyError as e:
        raise ClusterNotFoundError(str(e)) from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def leader_of(master: str, timeout: float = 10.0) -> str:
    """The address to call: ``master`` itself, or the leader a ``zk://`` URL names."""
    if not is_zk_url(master):
        return master
    detector = ZooKeeperDetector(parse_zk_url(master))
    await detector.start()
    try:
        return await detector.wait_leader(timeout)
    except TimeoutError as e:
        raise ClusterNotFoundError(str(e)) from None
    finally:
        await detector.stop()


def leader_address(master: str, timeout: float = 10.0) -> str:
    """Blocking form of :func:`leader_of`, for one-shot CLI calls."""
    return master if not is_zk_url(master) else asyncio.run(leader_of(master, timeout))
