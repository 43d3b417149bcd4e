"""``corral cluster up|status|down|list|kill|start|link``: multi-node test clusters on one host."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from corral.cli.output import Column, Listing, key, output_option, show
from corral.zk import DEFAULT_SESSION_TIMEOUT_S

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(fn: F) -> F:
    """The CLI's error handling (corral.cli.main), looked up at call time: main
    registers this group, so importing main here at load time would be circular."""

    def not_found(*args: Any, **kwargs: Any) -> Any:
        from corral.cluster.state import UnknownClusterError
        from corral.errors import IdLookupError

        try:
            return fn(*args, **kwargs)
        except UnknownClusterError as e:  # a name, not a bad value: exit 4 (corral/cli/exit.py)
            raise IdLookupError(str(e)) from None

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from corral.cli.common import handle_errors as main_handle_errors

        return main_handle_errors(not_found)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _console() -> Console:
    from corral.cli.common import console

    return console


def fail(message: str, code: int = 2) -> None:
    from corral.cli.common import fail as main_fail

    main_fail(message, code)


_STATE_STYLE = {
    "leading": "bold green",
    "leader": "green",
    "follower": "cyan",
    "standalone": "green",
    "standby": "cyan",
    "connected": "green",
    "down": "red",
    "paused": "yellow",
    "disconnected": "red",
    "not answering": "yellow",
    "not registered": "yellow",
}


@click.group()
def cluster() -> None:
    """Multi-node test clusters on this host: every node in its own network namespace."""


@cluster.command()
@click.option("--name", default="test", show_default=True, help="Names the cluster's namespaces and state.")
@click.option("--masters", default=3, show_default=True, help="Masters, elected through ZooKeeper.")
@click.option("--agents", default=5, show_default=True)
@click.option(
    "--zk",
    default=None,
    metavar="zk://H1:P1,.../PATH",
    help="Use this ZooKeeper ensemble (reachable from the bridge) instead of starting one.",
)
@click.option("--zk-nodes", default=3, show_default=True, help="Size of the ensemble started without --zk.")
@click.option(
    "--agent-resources",
    multiple=True,
    metavar="SPEC",
    help='e.g. "cpus:1;mem:1024": once for every agent, or once per agent '
    "(default: equal shares of this host).",
)
@click.option(
    "--agent-attributes",
    multiple=True,
    metavar="SPEC",
    help='e.g. "rack:r1,zone:a"; given several times, they are dealt to the agents in turn.',
)
@click.option("--zk-session-timeout", default=DEFAULT_SESSION_TIMEOUT_S, show_default=True, help="Seconds.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait until ready.")
@click.option("--json", "as_json", is_flag=True, help="Print the cluster's state as JSON.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Plaintext instead of mutual TLS with a CA of the cluster's own.",
)
@handle_errors
def up(
    name: str,
    masters: int,
    agents: int,
    zk: str | None,
    zk_nodes: int,
    agent_resources: tuple[str, ...],
    agent_attributes: tuple[str, ...],
    zk_session_timeout: float,
    timeout: float,
    as_json: bool,
    insecure: bool,
) -> None:
    """Start ZooKeeper, masters and agents, each node in its own network namespace.

    Every node speaks mutual TLS with certificates of the cluster's own CA
    (unless --insecure); the CLI uses the operator certificate it recorded.

    \b
    corral cluster up --masters 3 --agents 5 --agent-attributes rack:r1 --agent-attributes rack:r2
    corral run --cluster test -- hostname
    corral cluster status test
    corral cluster down test
    """
    from corral.cluster import runner
    from corral.cluster.topology import ClusterSpec

    spec = ClusterSpec(
        name=name,
        masters=masters,
        agents=agents,
        zk=zk,
        zk_nodes=zk_nodes,
        agent_resources=agent_resources,
        agent_attributes=agent_attributes,
        zk_session_timeout_s=zk_session_timeout,
    )
    started = time.monotonic()
    err = _console() if not as_json else None
    state = runner.up(
        spec,
        timeout,
        on_progress=(lambda m: err.print(f"  {m}", highlight=False)) if err else None,
        tls=not insecure,
    )
    took = time.monotonic() - started
    if as_json:
        click.echo(
            json.dumps(
                {"name": name, "zk": state.plan.zk_url, "subnet": str(state.plan.subnet), "up_s": took}
            )
        )
        return
    _console().print(
        f"[bold green]cluster {name}[/] up in {took:.1f}s: {masters} master(s), {agents} agent(s) "
        f"on {state.plan.subnet} (bridge {state.plan.bridge})",
        highlight=False,
    )
    _console().print(f"  clients: --cluster {name}  or  --master {state.plan.zk_url}", highlight=False)


NODE_COLUMNS = (
    Column("node", key("name")),
    Column("role", key("role")),
    Column("address", key("address")),
    Column("hostname", key("hostname")),
    Column("pid", key("pid")),
    Column("process", lambda n: Text("running", style="green") if n["alive"] else Text("gone", style="red")),
    Column("state", lambda n: Text(n["state"], style=_STATE_STYLE.get(n["state"], ""))),
    Column("resources / attributes", key("detail")),
)


@cluster.command()
@click.argument("name", default="test")
@click.option("--json", "as_json", is_flag=True, help="The same as -o json.")
@output_option
@handle_errors
def status(name: str, as_json: bool, output: str | None) -> None:
    """Every node of the cluster: address, process, and who leads."""
    from corral.cluster import runner
    from corral.cluster.state import ClusterState

    state = ClusterState.load(name)
    nodes = [asdict(n) for n in runner.status(state)]
    title = f"cluster {name} ({state.plan.subnet}, {state.plan.zk_url})"
    data = {"name": name, "zk": state.plan.zk_url, "subnet": str(state.plan.subnet), "nodes": nodes}
    show("json" if as_json else output, Listing(NODE_COLUMNS, nodes, title=title), data=data)


@cluster.command()
@click.argument("name", default="test")
@click.option("--keep-dir", is_flag=True, help="Keep the cluster's directory (logs, work dirs).")
@handle_errors
def down(name: str, keep_dir: bool) -> None:
    """Stop every node and remove every namespace, veth, bridge, cgroup and file the cluster made."""
    from corral.cluster import runner
    from corral.cluster.state import ClusterState

    state = ClusterState.load(name)
    started = time.monotonic()
    left = runner.down(state, keep_directory=keep_dir)
    if left:
        fail(
            f"cluster {name}: could not remove: {'; '.join(left)} (run `corral cluster down {name}` again)", 1
        )
    _console().print(
        f"cluster {name} down in {time.monotonic() - started:.1f}s; nothing left", highlight=False
    )


CLUSTER_COLUMNS = (Column("name", key("name")), Column("subnet", key("subnet")), Column("zk", key("zk")))


@cluster.command(name="list")
@output_option
@handle_errors
def list_(output: str | None) -> None:
    """Clusters recorded under $CORRAL_HOME/clusters."""
    from corral.cluster.state import ClusterState, list_clusters

    records = []
    for name in list_clusters():
        plan = ClusterState.load(name).plan
        records.append({"name": name, "subnet": str(plan.subnet), "zk": plan.zk_url})
    show(output, Listing(CLUSTER_COLUMNS, records, title="clusters", empty="no clusters"))


@cluster.command()
@click.argument("name")
@click.argument("node")
@click.option(
    "--signal",
    "-s",
    "sig",
    type=click.Choice(["KILL", "TERM", "STOP", "CONT"]),
    default="KILL",
    show_default=True,
    help="STOP pauses the node, CONT resumes it.",
)
@handle_errors
def kill(name: str, node: str, sig: str) -> None:
    """Signal one node's process (default: kill -9), e.g. `corral cluster kill test master1`."""
    import signal

    from corral.cluster import runner
    from corral.cluster.state import ClusterState

    pid = runner.signal_node(ClusterState.load(name), node, signal.Signals[f"SIG{sig}"])
    _console().print(f"SIG{sig} sent to {node} (pid {pid})", highlight=False)


@cluster.command()
@click.argument("name")
@click.argument("node")
@handle_errors
def start(name: str, node: str) -> None:
    """Start a killed node again, as it was (an agent recovers its tasks)."""
    from corral.cluster import runner
    from corral.cluster.state import ClusterState

    proc = runner.start_node(ClusterState.load(name), node)
    _console().print(f"{node} started (pid {proc.pid})", highlight=False)


@cluster.command()
@click.argument("name")
@click.argument("node")
@click.argument("state", type=click.Choice(["up", "down"]))
@handle_errors
def link(name: str, node: str, state: str) -> None:
    """Take a node's link down (a network partition) or up again."""
    from corral.cluster import runner
    from corral.cluster.state import ClusterState

    runner.set_link(ClusterState.load(name), node, state == "up")
    _console().print(f"{node}: link {state}", highlight=False)
