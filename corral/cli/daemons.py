"""The daemons: ``corral master`` and ``corral agent``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

import click

from corral.cli.common import _allowed_host_paths, _daemon_logging, fail, handle_errors, master_option
from corral.cli.discovery import resolve_master
from corral.cli.security import daemon_credentials, insecure_option, master_on_loopback, tls_options
from corral.resources import Resources

if TYPE_CHECKING:
    from corral.transport import Credentials


@click.command()
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
@click.option(
    "--zk-credentials",
    type=click.Path(path_type=Path),
    default=None,
    envvar="CORRAL_ZK_CREDENTIALS",
    metavar="FILE",
    help="One USER:PASSWORD line (mode 600), the same file on every master: the znodes become "
    "the masters' own (leader readable by anyone, registry by nobody else). See docs/operator.md.",
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
@click.option(
    "--max-frameworks-per-principal",
    default=1000,
    show_default=True,
    help="More SUBSCRIBEs of new frameworks by one principal are refused (RESOURCE_EXHAUSTED).",
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
    zk_credentials: Path | None,
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
    max_frameworks_per_principal: int,
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
    from corral.zk import parse_zk_url, read_credentials

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
        max_frameworks_per_principal=max_frameworks_per_principal,
        offer_timeout_s=offer_timeout,
        allocation_interval_s=allocation_interval,
        agent_reregister_timeout_s=agent_reregister_timeout,
        agent_heartbeat_interval_s=agent_heartbeat_interval,
        agent_heartbeat_misses=agent_heartbeat_misses,
        agent_gone_timeout_s=agent_gone_timeout,
        agent_unreachable_fraction=agent_unreachable_fraction,
        agent_unreachable_window_s=agent_unreachable_window,
    )

    zk_creds = None
    if zk_credentials is not None and not zk:
        fail("--zk-credentials: only with --zk (a standalone master keeps its registry in memory)")
    if zk:
        zk_url = parse_zk_url(zk)  # a clear error now rather than a stack trace later
        if zk_credentials is not None:
            zk_creds = read_credentials(zk_credentials)
        elif not master_on_loopback(zk) and not insecure:
            fail(
                f"refusing to use ZooKeeper at {zk_url.hosts} without --zk-credentials: anyone who can "
                "reach it could pose as the leading master or rewrite the registry. Give "
                "--zk-credentials FILE (one USER:PASSWORD line, mode 600, the same on every master), "
                "or pass --insecure to use an open tree anyway."
            )
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
            zk_credentials=zk_creds,
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


@click.command()
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
    "--registry-config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    envvar="CORRAL_REGISTRY_CONFIG",
    metavar="FILE",
    help='Image registries: [registries."HOST[:PORT]"] tables with username, password and '
    "insecure = true (plain HTTP; loopback registries always are). Mode 600. Tasks name "
    "registry images as HOST[:PORT]/REPO[:TAG|@DIGEST].",
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
@click.option(
    "--image-gc-budget",
    default=None,
    metavar="SIZE",
    help="Remove unused pulled images, least recently used first, once the image store passes SIZE "
    "(20GiB; default: once its disk is 85% full). `none` turns image collection off.",
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
    image_gc_budget: str | None,
    image_store: Path | None,
    registry_config: Path | None,
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
    from corral.codec import parse_attributes

    try:
        attrs = parse_attributes(attributes)
    except ValueError as e:
        fail(f"--attributes: {e}")
    res = Resources.parse(resources) if resources else None
    from corral.slave.containerizer.images import ImageError
    from corral.slave.containerizer.images.registry_config import RegistryConfig

    registries = RegistryConfig()
    if registry_config is not None:
        try:
            registries = RegistryConfig.load(registry_config)
        except ImageError as e:
            fail(str(e))
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
        image_gc=image_gc_budget is None or image_gc_budget.lower() != "none",
        image_gc_budget=_image_gc_budget(image_gc_budget),
        image_store=image_store or default_store_dir(),
        image_import_dirs=tuple(p.resolve() for p in image_import_dirs),
        registries=registries,
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


def _certificate_hostname(credentials: Credentials | None) -> str | None:
    """An agent's host name from its certificate (``agent:NAME``): the
    built-in policy lets an agent register only under that name."""
    from corral.pki import certificate_principal

    principal = certificate_principal(credentials)
    return principal.name if principal is not None and principal.kind == "agent" else None


def _image_gc_budget(text: str | None) -> int | None:
    from corral.slave.containerizer.images.gc import parse_size

    if text is None or text.lower() == "none":
        return None
    try:
        return parse_size(text)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--image-gc-budget") from None
