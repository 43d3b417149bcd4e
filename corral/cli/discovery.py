"""How clients find a master: ``--master``, then ``$CORRAL_MASTER``, then the
file ``corral local`` writes (so the local cluster needs no flags); and with
which credentials to call it: ``--tls-ca/--tls-cert/--tls-key`` (or
``$CORRAL_TLS_CA/CERT/KEY``), then the operator certificate that ``corral local``
or ``corral cluster up`` recorded for its own cluster, then plaintext claiming
``operator:<user>``."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from corral.errors import ClusterNotFoundError
from corral.zk import is_zk_url, parse_zk_url

if TYPE_CHECKING:
    from corral.transport import Credentials

#: Where ``--cluster NAME`` leaves its value in the click context (see resolve_master).
CLUSTER_META_KEY = "corral.cluster"
#: Where ``--tls-ca``/``--tls-cert``/``--tls-key`` leave theirs (see client_credentials).
TLS_META_KEY = "corral.tls"


def state_dir() -> Path:
    base = os.environ.get("CORRAL_HOME")
    return Path(base) if base else Path.home() / ".corral"


def local_file() -> Path:
    return state_dir() / "local.json"


def write_local(
    master: str,
    work_dir: Path,
    tls: tuple[Path, Path, Path] | None = None,
    image_store: Path | None = None,
) -> Path:
    """Record the local cluster; ``tls`` is the (CA, operator certificate, key)
    its clients use, so ``corral tasks`` and friends need no flags;
    ``image_store`` is where `corral image` imports for it."""
    path = local_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"master": master, "pid": os.getpid(), "work_dir": str(work_dir)}
    if image_store is not None:
        data["image_store"] = str(image_store)
    if tls is not None:
        data["tls"] = dict(zip(("ca", "cert", "key"), map(str, tls), strict=True))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)
    return path


def recorded_local() -> dict[str, Any] | None:
    """What the running ``corral local`` recorded (None: none, or its process is gone)."""
    try:
        data = json.loads(local_file().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid = data.get("pid")
    return data if isinstance(pid, int) and pid > 0 and _alive(pid) else None


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
    the running ``corral local``, the master of a running batch or service
    framework (``corral framework run``), then the only ``corral cluster up`` cluster."""
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

        hosted = framework_master()
        if hosted is not None:
            return hosted
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


#: the bundled frameworks that record where they run (``$CORRAL_HOME/<kind>.json``)
FRAMEWORK_RECORDS = ("batch", "service")


def framework_master() -> str | None:
    """The master a running batch (or service) framework of this host uses,
    from the record it writes (frameworks/hosting.py), so that ``corral
    tasks`` and ``corral logs`` find the cluster ``corral submit`` found
    through that framework; None if none runs."""
    for kind in FRAMEWORK_RECORDS:
        try:
            data = json.loads((state_dir() / f"{kind}.json").read_text())
        except (OSError, ValueError):
            continue
        pid = data.get("pid") if isinstance(data, dict) else None
        if isinstance(pid, int) and pid > 0 and _alive(pid) and data.get("master"):
            return str(data["master"])
    return None


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
    from corral.zk_detector import ZooKeeperDetector

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
    if not is_zk_url(master):
        return master
    import asyncio

    return asyncio.run(leader_of(master, timeout))


def operator_name() -> str:
    """The local user, as an operator principal's name."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}"


def flag_tls_files() -> tuple[str, str, str] | None:
    """``--tls-ca/--tls-cert/--tls-key`` (click reads ``$CORRAL_TLS_*`` for them),
    else the environment; ValueError if only some are given."""
    from corral.transport import ENV_CA, ENV_CERT, ENV_KEY, env_tls_files

    ctx = click.get_current_context(silent=True)
    given = ctx.meta.get(TLS_META_KEY) if ctx is not None else None
    if given and any(given):
        if not all(given):
            raise ValueError(
                "--tls-ca, --tls-cert and --tls-key go together "
                f"(or {ENV_CA}, {ENV_CERT} and {ENV_KEY}); some are missing"
            )
        return given[0], given[1], given[2]
    return env_tls_files()


def recorded_tls_files(master: str) -> tuple[str, str, str] | None:
    """The operator credentials ``corral local`` or ``corral cluster up``
    recorded, if ``master`` is that cluster's."""
    try:
        data = json.loads(local_file().read_text())
        if data.get("master") == master and isinstance(data.get("tls"), dict):
            tls = data["tls"]
            return str(tls["ca"]), str(tls["cert"]), str(tls["key"])
    except (OSError, ValueError, KeyError):
        pass
    from corral.cluster.state import ClusterState, list_clusters
    from corral.cluster.topology import TopologyError

    for name in list_clusters():
        try:
            state = ClusterState.load(name)
        except (TopologyError, KeyError, TypeError):
            continue
        if state.plan.zk_url == master and state.tls is not None:
            return state.tls
    return None


def client_credentials(master: str, claim: str = "") -> Credentials:
    """What a CLI client calls ``master`` with: TLS files from the flags, the
    environment or the cluster's own record; else plaintext claiming
    ``claim`` (default ``operator:<user>``)."""
    from corral.transport import Credentials

    files = flag_tls_files() or recorded_tls_files(master)
    if files is None:
        return Credentials(claim=claim or f"operator:{operator_name()}")
    return checked_tls(files)


def tls_store() -> Path:
    """Where the CLI remembers the TLS files it has checked (corral/tls_files.py)."""
    return state_dir() / "tls-checked.json"


def checked_tls(files: tuple[str, str, str]) -> Credentials:
    """The credentials in ``files`` (CA, certificate, key), checked by
    corral.pki; if the same bytes passed that check before and are still
    valid, read without checking again (no ``cryptography`` import)."""
    from corral import tls_files

    remembered = tls_files.remembered(files, tls_store())
    if remembered is not None:
        return remembered
    from corral.pki import load_credentials, validity_window

    credentials = load_credentials(*files)
    start, end = validity_window(files[0], files[1])
    tls_files.remember(credentials, tls_store(), start.timestamp(), end.timestamp())
    return credentials


def api_credentials(record: dict[str, Any] | None) -> Credentials | None:
    """What the CLI calls a framework's HTTP API with: the ``--tls-*`` files, or
    the operator credentials of the cluster whose framework ``record`` (its
    discovery file) describes, if it serves TLS; None: plain HTTP."""
    files = flag_tls_files()
    if files is None and record is not None and record.get("tls"):
        files = recorded_tls_files(str(record.get("master", "")))
        if files is None:
            raise ClusterNotFoundError(
                f"the framework at {record.get('address')} serves mutual TLS: give an operator "
                "certificate with --tls-ca/--tls-cert/--tls-key (or CORRAL_TLS_CA/CERT/KEY)"
            )
    if files is None:
        return None
    return checked_tls(files)


def framework_credentials(master: str, name: str) -> Credentials:
    """What ``corral framework run NAME`` calls ``master`` with and serves its
    HTTP API with: the ``--tls-*`` files (a ``framework:NAME`` certificate);
    for ``corral local`` or a ``corral cluster up`` cluster of this host, one
    issued now by that cluster's own CA (its key is beside it); else
    plaintext claiming ``framework:NAME``."""
    from corral.transport import Credentials

    principal = f"framework:{name}"
    files = flag_tls_files()
    if files is None and (recorded := recorded_tls_files(master)) is not None:
        from corral.pki import CertificateAuthority

        ca_dir = Path(recorded[0]).parent
        if not (ca_dir / "ca-key.pem").exists():
            raise ClusterNotFoundError(
                f"{master} serves mutual TLS: give a {principal} certificate "
                "with --tls-ca/--tls-cert/--tls-key"
            )
        issued = CertificateAuthority.load(ca_dir).issue(principal)
        files = (recorded[0], str(issued.cert), str(issued.key))
    if files is None:
        return Credentials(claim=principal)
    from corral.pki import load_credentials

    return load_credentials(*files)
