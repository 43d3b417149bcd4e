"""The ``corral`` command line."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import grpc
from rich.console import Console

from corral import __version__
from corral import logging as corral_logging
from corral.cli import images, views
from corral.cli.discovery import (
    CLUSTER_META_KEY,
    ClusterNotFoundError,
    remove_local,
    resolve_master,
    write_local,
)
from corral.cli.security import daemon_credentials, insecure_option, master_on_loopback, tls_options
from corral.codec import parse_attributes
from corral.errors import CorralError
from corral.frameworks.batch import JobSpecError, TaskGroup
from corral.resources import ResourceError, Resources

if TYPE_CHECKING:
    from corral.transport import Credentials

F = TypeVar("F", bound=Callable[..., Any])
# Piped output gets wide tables rather than words folded at 80 columns.
console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "200")))
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    sys.exit(code)


def handle_errors(fn: F) -> F:
    """Turn expected failures into a sentence and a non-zero exit, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClusterNotFoundError as e:
            fail(str(e))
        except (JobSpecError, ResourceError, ValueError) as e:
            fail(str(e))
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            if code == grpc.StatusCode.UNAVAILABLE:
                # A refused TLS handshake looks like a closed socket from here.
                hint = (
                    " (if it serves mutual TLS: give --tls-ca, --tls-cert and --tls-key of an operator "
                    "certificate from its CA, or set CORRAL_TLS_CA/CERT/KEY)"
                    if "Socket closed" in (details or "") or "handshake" in (details or "").lower()
                    else ""
                )
                fail(f"cannot reach the master: {details}{hint}")
            fail(f"{code.name if code else 'error'}: {details}")
        except CorralError as e:
            fail(str(e))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        return None

    return wrapper  # type: ignore[return-value]


def master_option(fn: F) -> F:
    """``--master``, ``--cluster NAME`` (a `corral cluster up` cluster; read by
    resolve_master) and the TLS options."""
    fn = tls_options(fn)
    fn = click.option(
        "--cluster",
        default=None,
        metavar="NAME",
        expose_value=False,
        callback=lambda ctx, _param, value: ctx.meta.__setitem__(CLUSTER_META_KEY, value),
        help="Talk to this `corral cluster up` cluster.",
    )(fn)
    return click.option(
        "--master",
        "-m",
        envvar="CORRAL_MASTER",
        default=None,
        metavar="HOST:PORT",
        help="Master to talk to (default: $CORRAL_MASTER, then the `corral local` cluster).",
    )(fn)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="corral")
@click.option("--log-level", default=None, help="debug, info, warning or error.")
@click.pass_context
def cli(ctx: click.Context, log_level: str | None) -> None:
    """corral: a two-level datacenter resource scheduler (Mesos-style), in Python."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level


def _daemon_logging(ctx: click.Context) -> None:
    corral_logging.configure(ctx.obj.get("log_level") or os.environ.get("CORRAL_LOG_LEVEL") or "info")


def _client_logging(ctx: click.Context) -> None:
    corral_logging.configure(ctx.obj.get("log_level") or os.environ.get("CORRAL_LOG_LEVEL") or "warning")


# -- processes ----------------------------------------------------------------


@cli.command()
@click.option("--agents", "-n", default=3, show_default=True, help="Number of agents.")
@click.option("--port", default=5050, show_default=True, help="Master port (0: any free port).")
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where sandboxes go (default: ~/.corral/local).",
)
@click.option(
    "--agent-resources",
    default=None,
    metavar="SPEC",
    help='Resources of each agent, e.g. "cpus:1;mem:1024" (default: a share of this host).',
)
@click.option(
    "--submit",
    "job_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Run this job on the new cluster, show its result, then stop.",
)
@click.option("--output/--no-output", default=True, help="With --submit: show each task's stdout.")
@click.option("--batch/--no-batch", default=True, help="Also run the batch framework service.")
@click.option("--services/--no-services", default=True, help="Also run the service framework.")
@click.option(
    "--allowed-host-paths",
    default="",
    metavar="PATH[,PATH]",
    help="Host paths tasks may bind-mount as volumes (default none), as for `corral agent`.",
)
@click.option(
    "--image-import-dir",
    "image_import_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="A directory under which tasks may name image tarballs by path (repeatable), as for `corral agent`.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Plaintext instead of mutual TLS with a CA of its own (any local user can then call it).",
)
@click.pass_context
@handle_errors
def local(
    ctx: click.Context,
    agents: int,
    port: int,
    work_dir: Path | None,
    agent_resources: str | None,
    job_file: Path | None,
    output: bool,
    batch: bool,
    services: bool,
    allowed_host_paths: str,
    image_import_dirs: tuple[Path, ...],
    insecure: bool,
) -> None:
    """Start an embedded cluster: a master and N agents in one process, no ZooKeeper.

    It makes a CA of its own in WORK_DIR/tls and speaks mutual TLS (unless
    --insecure); the CLI finds the master and the operator's certificate
    through ~/.corral/local.json.
    """
    from corral.cli.discovery import operator_name, state_dir
    from corral.cli.local import LocalCluster, fresh_work_dir, serve_until_signal
    from corral.slave.containerizer.images import default_store_dir

    if agents < 1:
        fail("--agents: must be at least 1")
    ctx.obj["log_level"] = (
        ctx.obj.get("log_level") or os.environ.get("CORRAL_LOG_LEVEL") or ("warning" if job_file else "info")
    )
    _daemon_logging(ctx)
    from corral.cli.batch import read_job_file, submit_local

    job = read_job_file(job_file) if job_file else None
    res = Resources.parse(agent_resources) if agent_resources else None
    wd = fresh_work_dir(work_dir or state_dir() / "local")

    async def main() -> int:
        cluster = LocalCluster(
            agents=agents,
            work_dir=wd,
            listen=f"127.0.0.1:{port}",
            agent_resources=res,
            image_store=default_store_dir(),  # where `corral image import` puts them
            image_import_dirs=tuple(p.resolve() for p in image_import_dirs),
            allowed_host_paths=_allowed_host_paths(allowed_host_paths),
            tls=not insecure,
        )
        try:
            await cluster.start()
        except RuntimeError as e:
            fail(f"could not start the master on port {port}: {e} (try --port 0)")
        path = write_local(cluster.master_address, wd, cluster.tls_files(f"operator:{operator_name()}"))
        try:
            console.print(
                f"[bold green]corral local[/] master [bold]{cluster.master_address}[/] with "
                f"{agents} agent(s); work dir {wd}; "
                + (
                    f"mutual TLS, CA {cluster.tls_dir / 'ca.pem'}"
                    if cluster.tls
                    else "plaintext (--insecure)"
                ),
                highlight=False,
            )
            for agent in cluster.agent_list:
                console.print(f"  agent {agent.agent_id}: {agent.total.format()}", highlight=False)
            if job is None:
                service = None
                if batch:
                    from corral.frameworks.batch.service import BatchService

                    service = BatchService(
                        cluster.master_address,
                        wd / "batch.db",
                        credentials=cluster.credentials("framework:batch"),
                        acls=cluster.acls,
                    )
                    console.print(f"  batch framework API at {await service.start()}", highlight=False)
                hosted = None
                if services:
                    from corral.frameworks.service.service import ServiceFramework

                    hosted = ServiceFramework(
                        cluster.master_address,
                        wd / "service.db",
                        credentials=cluster.credentials("framework:service"),
                        acls=cluster.acls,
                    )
                    console.print(f"  service framework API at {await hosted.start()}", highlight=False)
                console.print(
                    f"  clients find it through {path}; try `corral run -- echo hello`. Ctrl-C stops it.",
                    highlight=False,
                )
                try:
                    await serve_until_signal(cluster)
                finally:
                    if hosted is not None:
                        await hosted.stop()
                    if service is not None:
                        await service.stop()
                return 0
            return await submit_local(cluster.master_address, job[0], job[1], output)
        finally:
            remove_local()
            await cluster.stop()

    sys.exit(asyncio.run(main()))


@cli.command()
@click.option("--listen", default="0.0.0.0:5050", show_default=True, metavar="HOST:PORT")
@click.option(
    "--advertise",
    default=None,
    metavar="HOST:PORT",
    help="Address clients should use (default: the listen address).",
)
@click.option("--offer-timeout", default=30.0, show_default=True, help="Seconds.")
@click.option("--allocation-interval", default=1.0, show_default=True, help="Seconds.")
@click.option(
    "--zk",
    default=None,
    metavar="zk://H1:P1,H2:P2/PATH",
    help="Contend for leadership through ZooKeeper (default: standalone).",
)
@click.option("--zk-session-timeout", default=5.0, show_default=True, help="Seconds (see docs/operator.md).")
@click.option(
    "--zk-connect-timeout",
    default=0.0,
    show_default=True,
    help="Seconds to keep trying to reach ZooKeeper at start before exiting; 0: keep trying.",
)
@click.option(
    "--metrics-listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (default: off).",
)
@click.option(
    "--agent-reregister-timeout",
    default=30.0,
    show_default=True,
    help="Seconds a new leader waits for known agents to come back.",
)
@click.option("--agent-heartbeat-interval", default=5.0, show_default=True, help="Seconds.")
@click.option(
    "--agent-heartbeat-misses",
    default=3,
    show_default=True,
    help="Missed heartbeats after which an agent is unreachable.",
)
@click.option(
    "--agent-gone-timeout",
    default=600.0,
    show_default=True,
    help="Seconds unreachable after which an agent is gone and its tasks GONE.",
)
@click.option(
    "--agent-unreachable-fraction",
    default=0.1,
    show_default=True,
    help="At most this fraction of the agents (at least one) is marked unreachable per window; 1: no limit.",
)
@click.option("--agent-unreachable-window", default=60.0, show_default=True, help="Seconds.")
@click.option(
    "--acls",
    default=None,
    metavar="FILE",
    help="ACL policy (TOML; `corral acl default` prints the built-in one). Reloaded on change and SIGHUP.",
)
@click.option("--audit-log", default=None, metavar="FILE", help="Also append audit events here (JSON lines).")
@tls_options
@insecure_option
@click.option(
    "--rate-limits",
    "rate_limits_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Per-principal limits on framework calls: lines of 'KIND:NAME QPS BURST' "
    "(or 'KIND:NAME unlimited'; 'default' for everyone else). See docs/operator.md.",
)
@click.option(
    "--framework-qps",
    default=1000.0,
    show_default=True,
    help="Framework calls per second per principal not in --rate-limits; 0: unlimited.",
)
@click.option("--framework-burst", default=2000.0, show_default=True, help="Burst for --framework-qps.")
@click.option(
    "--subscribe-qps",
    default=10.0,
    show_default=True,
    help="SUBSCRIBE calls per second per principal; 0: unlimited.",
)
@click.option("--subscribe-burst", default=100.0, show_default=True, help="Burst for --subscribe-qps.")
@click.option(
    "--max-tasks-per-accept",
    default=1000,
    show_default=True,
    help="An ACCEPT with more tasks is refused whole (INVALID_ARGUMENT).",
)
@click.pass_context
@handle_errors
def master(
    ctx: click.Context,
    listen: str,
    advertise: str | None,
    offer_timeout: float,
    allocation_interval: float,
    zk: str | None,
    zk_session_timeout: float,
    zk_connect_timeout: float,
    agent_reregister_timeout: float,
    agent_heartbeat_interval: float,
    agent_heartbeat_misses: int,
    agent_gone_timeout: float,
    agent_unreachable_fraction: float,
    agent_unreachable_window: float,
    metrics_listen: str | None,
    acls: str | None,
    audit_log: str | None,
    insecure: bool,
    rate_limits_file: str | None,
    framework_qps: float,
    framework_burst: float,
    subscribe_qps: float,
    subscribe_burst: float,
    max_tasks_per_accept: int,
) -> None:
    """Run a master: standalone, or one of several elected through ZooKeeper.

    With --tls-ca/--tls-cert/--tls-key it serves mutual TLS only: every client
    needs a certificate from that CA. Without them it listens only on loopback
    unless --insecure is given.
    """
    import socket

    from corral.master.master import MasterConfig
    from corral.master.rate_limit import RateLimits, limit_or_unlimited, parse_rate_limits
    from corral.master.server import MasterServer
    from corral.transport import is_loopback
    from corral.zk import parse_zk_url

    _daemon_logging(ctx)
    credentials = daemon_credentials()
    if credentials is None and not is_loopback(listen) and not insecure:
        fail(
            f"refusing to listen on {listen} without TLS: anyone who can reach it could run tasks as "
            "root and read every sandbox. Give --tls-ca, --tls-cert and --tls-key (see `corral certs`), "
            "listen on 127.0.0.1, or pass --insecure to serve plaintext anyway."
        )
    try:
        call_default = limit_or_unlimited(framework_qps, framework_burst)
        subscribe_limits = RateLimits(default=limit_or_unlimited(subscribe_qps, subscribe_burst))
        call_limits = RateLimits(default=call_default)
        if rate_limits_file:
            with open(rate_limits_file, encoding="utf-8") as f:
                call_limits = parse_rate_limits(f.read(), call_default)
    except OSError as e:
        fail(f"--rate-limits: cannot read {rate_limits_file}: {e.strerror}")
        raise AssertionError("unreachable: fail exits") from None
    except ValueError as e:
        where = f"--rate-limits {rate_limits_file}" if rate_limits_file else "rate limits"
        fail(f"{where}: {e}")
        raise AssertionError("unreachable: fail exits") from None
    if max_tasks_per_accept < 1:
        fail(f"--max-tasks-per-accept: must be at least 1, got {max_tasks_per_accept}")
    config = MasterConfig(
        framework_rate_limits=call_limits,
        subscribe_rate_limits=subscribe_limits,
        max_tasks_per_accept=max_tasks_per_accept,
        offer_timeout_s=offer_timeout,
        allocation_interval_s=allocation_interval,
        agent_reregister_timeout_s=agent_reregister_timeout,
        agent_heartbeat_interval_s=agent_heartbeat_interval,
        agent_heartbeat_misses=agent_heartbeat_misses,
        agent_gone_timeout_s=agent_gone_timeout,
        agent_unreachable_fraction=agent_unreachable_fraction,
        agent_unreachable_window_s=agent_unreachable_window,
    )

    if zk:
        parse_zk_url(zk)  # a clear error now rather than a stack trace later
    public = advertise
    if listen.startswith("0.0.0.0:") and not public:
        # Clients must be told an address they can dial, not the wildcard.
        public = f"{socket.gethostname()}:{listen.rsplit(':', 1)[1]}"

    async def main() -> None:
        import signal

        server = MasterServer(
            listen,
            config,
            zk=zk,
            zk_session_timeout_s=zk_session_timeout,
            zk_connect_timeout_s=zk_connect_timeout,
            advertise=public,
            metrics_listen=metrics_listen,
            policy=acls,
            audit_log=audit_log,
            credentials=credentials,
        )
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, server.authorizer.reload)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


@cli.command()
@master_option
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=Path("/var/lib/corral/agent"),
    show_default=True,
)
@click.option(
    "--resources",
    default=None,
    metavar="SPEC",
    help='e.g. "cpus:4;mem:8192;disk:20000;ports:[31000-32000]" (default: detected).',
)
@click.option("--attributes", default="", metavar="SPEC", help='e.g. "rack:r1;zone:a".')
@click.option(
    "--hostname",
    default=None,
    help="Default: under TLS the NAME of the agent's certificate (agent:NAME), which the built-in "
    "policy requires; else this machine's host name.",
)
@click.option("--cgroup-prefix", default="corral", show_default=True)
@click.option(
    "--image-store",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Image store shared with `corral image` (default: $CORRAL_IMAGE_STORE, "
    "$CORRAL_HOME/images or /var/lib/corral/images).",
)
@click.option(
    "--image-import-dir",
    "image_import_dirs",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="A directory under which tasks may name image tarballs by path (repeatable; "
    "default none: tasks name images imported with `corral image import`).",
)
@click.option(
    "--allowed-host-paths",
    default="",
    metavar="PATH[,PATH]",
    help="Host paths (and what is below them) tasks may bind-mount as volumes "
    "(default none: only tmpfs and sandbox volumes).",
)
@click.option(
    "--disk-watch-interval",
    type=click.FloatRange(min=0.1),
    default=15.0,
    show_default=True,
    help="Seconds between measurements of each sandbox against its task's disk.",
)
@click.option(
    "--task-pids-max",
    type=click.IntRange(min=0),
    default=4096,
    show_default=True,
    help="Processes and threads one task may have at once (0: unlimited).",
)
@click.option(
    "--recover",
    type=click.Choice(["reconnect", "cleanup"]),
    default="reconnect",
    show_default=True,
    help="At start: re-attach to the tasks a previous run left, or kill and forget them.",
)
@click.option(
    "--gc-delay",
    default=7 * 86400.0,
    show_default=True,
    help="Seconds a finished task's sandbox is kept (less as the work disk fills).",
)
@click.option(
    "--metrics-listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (default: off).",
)
@click.option(
    "--gc-disk-headroom",
    default=0.1,
    show_default=True,
    help="Fraction of the work disk kept free: sandboxes go sooner as usage nears 1 - this.",
)
@insecure_option
@click.option(
    "--seccomp-profile",
    "seccomp_profiles",
    multiple=True,
    metavar="NAME=PATH",
    help="A seccomp profile (moby's JSON form) tasks may name besides the default (repeatable).",
)
@click.option(
    "--allow-unconfined-seccomp",
    is_flag=True,
    help="Let tasks ask for seccomp_profile 'unconfined' (no filter at all).",
)
@click.option(
    "--allowed-devices",
    default="",
    metavar="PATH[,PATH]",
    help="Host device nodes tasks may ask for (default none: the minimal /dev only).",
)
@click.option(
    "--user-namespaces",
    is_flag=True,
    help="Run tasks in a user namespace of their own (their root an unprivileged host uid) "
    "unless a task's container.user_namespace says otherwise.",
)
@click.pass_context
@handle_errors
def agent(
    ctx: click.Context,
    master: str | None,
    work_dir: Path,
    resources: str | None,
    attributes: str,
    hostname: str | None,
    cgroup_prefix: str,
    disk_watch_interval: float,
    task_pids_max: int,
    recover: str,
    gc_delay: float,
    gc_disk_headroom: float,
    image_store: Path | None,
    image_import_dirs: tuple[Path, ...],
    allowed_host_paths: str,
    metrics_listen: str | None,
    insecure: bool,
    seccomp_profiles: tuple[str, ...],
    allow_unconfined_seccomp: bool,
    allowed_devices: str,
    user_namespaces: bool,
) -> None:
    """Run a node agent that dials the master.

    With --tls-ca/--tls-cert/--tls-key (a certificate for agent:NAME) it calls
    the master over mutual TLS; without them it dials only a master on
    loopback unless --insecure is given.
    """
    import socket

    from corral.slave.agent import AgentConfig, AgentRejected, run_agent
    from corral.slave.checkpoints import CheckpointError
    from corral.slave.containerizer.images import default_store_dir
    from corral.slave.containerizer.seccomp import parse_profile_flags

    _daemon_logging(ctx)
    master_address = resolve_master(master)
    credentials = daemon_credentials()
    if credentials is None and not master_on_loopback(master_address) and not insecure:
        fail(
            f"refusing to call the master at {master_address} without TLS: anyone on the path could "
            "impersonate it and run tasks here as root. Give --tls-ca, --tls-cert and --tls-key "
            "(see `corral certs`), or pass --insecure to use plaintext anyway."
        )
    try:
        profiles = parse_profile_flags(seccomp_profiles)
    except ValueError as e:
        fail(str(e))
    devices = tuple(d for d in allowed_devices.split(",") if d)
    for d in devices:
        if not d.startswith("/dev/"):
            fail(f"--allowed-devices: {d!r} is not a path under /dev/")
    try:
        attrs = parse_attributes(attributes)
    except ValueError as e:
        fail(f"--attributes: {e}")
    res = Resources.parse(resources) if resources else None
    config = AgentConfig(
        master=master_address,
        credentials=credentials,
        work_dir=work_dir,
        resources=res,
        attributes=attrs,
        hostname=hostname or _certificate_hostname(credentials) or socket.gethostname(),
        cgroup_prefix=cgroup_prefix,
        disk_watch_interval_s=disk_watch_interval,
        task_pids_max=task_pids_max or None,
        recover=recover,
        gc_delay_s=gc_delay,
        gc_disk_headroom=gc_disk_headroom,
        image_store=image_store or default_store_dir(),
        image_import_dirs=tuple(p.resolve() for p in image_import_dirs),
        allowed_host_paths=_allowed_host_paths(allowed_host_paths),
        metrics_listen=metrics_listen,
        seccomp_profiles=profiles,
        allow_unconfined_seccomp=allow_unconfined_seccomp,
        allowed_devices=devices,
        user_namespaces=user_namespaces,
    )
    try:
        asyncio.run(run_agent(config))
    except AgentRejected as e:
        fail(f"the master rejected this agent: {e}", 1)
    except CheckpointError as e:
        fail(str(e), 1)


# -- batch work ---------------------------------------------------------------


def _parse_env(items: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


@cli.command(context_settings={"ignore_unknown_options": True})
@master_option
@click.option("--cpus", default=0.1, show_default=True, type=float)
@click.option("--mem", default=64.0, show_default=True, type=float, help="MiB.")
@click.option("--env", "-e", multiple=True, metavar="KEY=VALUE")
@click.option("--name", default="run", show_default=True)
@click.option(
    "--network",
    type=click.Choice(["host", "none"]),
    default="host",
    show_default=True,
    help="none: a network namespace with loopback only.",
)
@click.option("--user", default=None, metavar="UID[:GID]", help="Run as this user (default root).")
@click.option(
    "--image", default="", metavar="NAME[:TAG]|TARBALL", help="Run on this image (see `corral image`)."
)
@click.option(
    "--volume",
    "-v",
    multiple=True,
    metavar="HOST:CONTAINER[:ro]",
    help="Bind-mount a host path (on the agent) into the container.",
)
@click.option("--read-only", is_flag=True, help="With --image: a read-only root.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
@handle_errors
def run(
    ctx: click.Context,
    master: str | None,
    cpus: float,
    mem: float,
    env: tuple[str, ...],
    name: str,
    network: str,
    user: str | None,
    image: str,
    volume: tuple[str, ...],
    read_only: bool,
    command: tuple[str, ...],
) -> None:
    """Run one task and stream its output; exit with its exit code.

    \b
    corral run -- echo hello
    corral run --cpus 1 --mem 256 -- python3 -c 'print(42)'
    corral run --image busybox:test -v /srv/data:/data:ro -- ls /data
    """
    import shlex

    from corral.cli.jobs import exit_code_of, follow_output, never_fits_message, run_job
    from corral.frameworks.batch.spec import parse_job

    _client_logging(ctx)
    addr = resolve_master(master)
    if not command and not image:
        fail("give a command (or an --image whose Entrypoint/Cmd to run)")
    cmd = command[0] if len(command) == 1 else shlex.join(command)
    volumes = []
    for v in volume:
        host, sep, rest = v.partition(":")
        target, _, mode = rest.partition(":")
        if not sep or not host or not target or mode not in ("", "ro", "rw"):
            fail(f"--volume: must be HOST:CONTAINER[:ro|rw], got {v!r}")
        volumes.append({"host_path": host, "container_path": target, "read_only": mode == "ro"})
    spec = parse_job(
        {
            "name": name,
            "tasks": [
                {
                    "name": name,
                    "command": cmd,
                    "cpus": cpus,
                    "mem": mem,
                    "env": _parse_env(env),
                    "network": network,
                    **({"user": user} if user else {}),
                    **({"image": image, "read_only_root": read_only} if image else {}),
                    **({"volumes": volumes} if volumes else {}),
                }
            ],
        }
    )
    assert isinstance(spec.groups[0], TaskGroup)
    never = never_fits_message(addr, spec)
    if never is not None:
        fail(never, code=3)

    async def main() -> int:
        result = await run_job(
            addr,
            spec,
            framework_name="corral-run",
            while_running=follow_output(addr, lambda job_id: f"{job_id}.{name}.0"),
        )
        p = result.progress[0]
        if result.interrupted:
            err_console.print("interrupted: the task was killed")
            return 130
        if (p.state is not None and p.state.name not in ("FINISHED", "FAILED")) or (
            p.status is not None and p.status.reason.startswith(("CONTAINER_LIMITATION", "CONTAINER_LAUNCH"))
        ):
            msg = p.status.message if p.status else ""
            err_console.print(f"[red]task {p.state.name if p.state else '?'}:[/] {msg}", highlight=False)
        return exit_code_of(p)

    sys.exit(asyncio.run(main()))


@cli.command()
@master_option
@click.argument("task_id")
@click.option("--framework", default="", help="Framework id, if several use this task id.")
@click.pass_context
@handle_errors
def kill(ctx: click.Context, master: str | None, task_id: str, framework: str) -> None:
    """Kill a task (SIGTERM, then SIGKILL after its grace period)."""
    _client_logging(ctx)
    views.kill_task(resolve_master(master), task_id, framework)
    console.print(f"kill sent to task {task_id}", highlight=False)


# -- views --------------------------------------------------------------------


@cli.command()
@master_option
@click.pass_context
@handle_errors
def agents(ctx: click.Context, master: str | None) -> None:
    """List agents with their resources."""
    _client_logging(ctx)
    console.print(views.agents_table(resolve_master(master)))


@cli.command()
@master_option
@click.pass_context
@handle_errors
def frameworks(ctx: click.Context, master: str | None) -> None:
    """List frameworks."""
    _client_logging(ctx)
    console.print(views.frameworks_table(resolve_master(master)))


@cli.command()
@master_option
@click.option("--all", "-a", "include_completed", is_flag=True, help="Include completed tasks.")
@click.option("--framework", default="", help="Only this framework's tasks.")
@click.pass_context
@handle_errors
def tasks(ctx: click.Context, master: str | None, include_completed: bool, framework: str) -> None:
    """List tasks with their states."""
    _client_logging(ctx)
    console.print(views.tasks_table(resolve_master(master), include_completed, framework))


@cli.command()
@master_option
@click.option("--agent", default="", help="Only tasks on this agent.")
@click.option("--framework", default="", help="Only this framework's tasks.")
@click.option("--task", default="", help="Only this task.")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True)
@click.option("--once", is_flag=True, help="Print one table (two samples, one interval apart) and exit.")
@click.pass_context
@handle_errors
def top(
    ctx: click.Context, master: str | None, agent: str, framework: str, task: str, interval: float, once: bool
) -> None:
    """Live CPU, memory, pids and disk of running tasks."""
    import time

    from rich.live import Live

    from corral.cli import top as topview

    _client_logging(ctx)
    address = resolve_master(master)
    usages, errors, leader = topview.sample(address, agent, framework, task)
    if once:
        time.sleep(interval)
        previous = topview.index(usages)
        usages, errors, leader = topview.sample(address, agent, framework, task)
        console.print(topview.usage_table(usages, previous, errors, f"tasks of {leader}"))
        return
    with Live(console=console, auto_refresh=False) as live:
        while True:
            previous = topview.index(usages)
            time.sleep(interval)
            usages, errors, leader = topview.sample(address, agent, framework, task)
            live.update(topview.usage_table(usages, previous, errors, f"tasks of {leader}"), refresh=True)


@cli.command()
@master_option
@click.argument("task_id")
@click.option("--stderr", is_flag=True, help="Show stderr instead of stdout.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing while the task runs.")
@click.option("--framework", default="")
@click.pass_context
@handle_errors
def logs(
    ctx: click.Context,
    master: str | None,
    task_id: str,
    stderr: bool,
    follow: bool,
    framework: str,
) -> None:
    """Print a task's stdout (or stderr) from its sandbox."""
    _client_logging(ctx)
    views.print_logs(resolve_master(master), task_id, "stderr" if stderr else "stdout", follow, framework)


from corral.cli.cluster import cluster  # noqa: E402  (the group looks main's helpers up lazily)

cli.add_command(cluster)
cli.add_command(images.image)


def _register() -> None:
    """Commands that live in their own modules (one line each)."""
    from corral.cli import acl, allocation, batch, certs, chaos, frameworks_cmd, service, sim

    cli.add_command(certs.certs)
    cli.add_command(chaos.chaos)
    cli.add_command(frameworks_cmd.framework)
    cli.add_command(service.service)
    cli.add_command(batch.submit)
    cli.add_command(batch.jobs)
    cli.add_command(batch.job)
    cli.add_command(batch.cancel)
    cli.add_command(allocation.explain)
    cli.add_command(allocation.reserve)
    cli.add_command(allocation.unreserve)
    cli.add_command(allocation.roles)
    cli.add_command(allocation.weights)
    cli.add_command(allocation.quota)
    cli.add_command(allocation.drain)
    cli.add_command(allocation.undrain)
    cli.add_command(acl.acl)
    cli.add_command(sim.sim)


def main() -> None:
    _register()
    cli(obj={})


if __name__ == "__main__":
    main()


def _certificate_hostname(credentials: Credentials | None) -> str | None:
    """An agent's host name from its certificate (``agent:NAME``): the
    built-in policy lets an agent register only under that name."""
    from corral.pki import certificate_principal

    principal = certificate_principal(credentials)
    return principal.name if principal is not None and principal.kind == "agent" else None


def _allowed_host_paths(spec: str) -> tuple[Path, ...]:
    """``--allowed-host-paths``: comma-separated absolute paths."""
    paths = tuple(Path(p.strip()) for p in spec.split(",") if p.strip())
    for p in paths:
        if not p.is_absolute():
            fail(f"--allowed-host-paths: {str(p)!r} is not an absolute path")
    return paths
