"""The certificates of a ``corral cluster up`` cluster: a CA of its own in
``<directory>/tls``, one certificate per node (``master:<node>`` with the
node's address and hostname as names, ``agent:<hostname>``), one for the
local operator (what the CLI and ``corral cluster status`` use) and, on
demand, one per framework. The cluster's state records the operator's files,
so clients find them as they find the cluster."""

from __future__ import annotations

import functools
from pathlib import Path

from corral.cli.discovery import operator_name
from corral.cluster.state import ClusterState
from corral.cluster.topology import NodePlan
from corral.transport import Credentials


def tls_dir(state: ClusterState) -> Path:
    return state.directory / "tls"


def node_principal(n: NodePlan) -> str:
    return f"master:{n.name}" if n.role == "master" else f"agent:{n.hostname}"


def make(state: ClusterState) -> tuple[str, str, str]:
    """A CA and the certificates of every master and agent, and of the local
    operator; returns the operator's (CA, certificate, key) for the state."""
    from corral.pki import CertificateAuthority

    ca = CertificateAuthority.init(tls_dir(state), name=f"corral cluster {state.name}")
    for n in state.plan.nodes:
        if n.role == "master":
            ca.issue(node_principal(n), dns=[n.hostname], ips=[n.address])
        elif n.role == "agent":
            ca.issue(node_principal(n))
    operator = ca.issue(f"operator:{operator_name()}")
    return str(ca.cert_file), str(operator.cert), str(operator.key)


def files_of(state: ClusterState, principal: str) -> tuple[Path, Path, Path]:
    """(CA, certificate, key) of ``principal``, issued now if it has none yet."""
    from corral.pki import CertificateAuthority, issued_files

    d = tls_dir(state)
    cert, key = issued_files(d, principal, lambda: CertificateAuthority.load(d))
    return d / "ca.pem", cert, key


def node_args(state: ClusterState, n: NodePlan) -> list[str]:
    """The ``--tls-*`` arguments of a master or agent node (none for a plaintext
    cluster); a master's also name the ACL policy and the ZooKeeper credentials."""
    if state.tls is None:
        return []
    ca, cert, key = files_of(state, node_principal(n))
    args = ["--tls-ca", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)]
    if n.role == "master":
        args += ["--acls", str(policy_file(state)), "--zk-credentials", str(zk_credentials_file(state))]
    return args


def zk_credentials_file(state: ClusterState) -> Path:
    """The masters' shared ZooKeeper identity (corral/zk.py, "Access"), made
    once: the tasks of the cluster reach its ZooKeeper nodes too."""
    from corral.zk import write_credentials

    path = tls_dir(state) / "zk-credentials"
    write_credentials(path)
    return path


def policy_file(state: ClusterState) -> Path:
    """The masters' ACL policy: the local-cluster one (master/authz.py), written
    once so an operator may edit it (the masters reload it on change)."""
    from corral.master.authz import LOCAL_POLICY_TOML

    path = tls_dir(state) / "acls.toml"
    if not path.exists():
        path.write_text(LOCAL_POLICY_TOML)
    return path


def env(files: tuple[Path, Path, Path] | tuple[str, str, str]) -> dict[str, str]:
    """The environment a child process reads these files from (CORRAL_TLS_*)."""
    ca, cert, key = files
    return {"CORRAL_TLS_CA": str(ca), "CORRAL_TLS_CERT": str(cert), "CORRAL_TLS_KEY": str(key)}


def operator_credentials(state: ClusterState) -> Credentials | None:
    """What the operator calls this cluster's masters with; None: plaintext."""
    return None if state.tls is None else _load(state.tls)


@functools.lru_cache(maxsize=8)
def _load(files: tuple[str, str, str]) -> Credentials:
    # The observer asks several times a second; the files do not change under a run.
    from corral.pki import load_credentials

    return load_credentials(*files)
