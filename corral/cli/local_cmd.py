"""``corral local``: an embedded cluster, a master and N agents in one process.

The master and agent code is imported when the command runs, not when the
CLI starts (``corral --help`` lists this command without importing it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from corral.cli.common import _allowed_host_paths, _daemon_logging, console, fail, handle_errors


@click.command()
@click.option("--agents", "-n", default=3, show_default=True, help="Number of agents.")
@click.option("--port", default=5050, show_default=True, help="Master port (0: any free port).")
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Its state: agents' checkpoints, sandboxes, batch and service databases (default: ~/.corral/local).",
)
@click.option(
    "--fresh",
    is_flag=True,
    help="Forget the state of a previous run (new agent ids, no jobs or services); "
    "containers it left are killed.",
)
@click.option(
    "--image-store",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The agents' image store (default: $CORRAL_IMAGE_STORE, else $CORRAL_HOME/images "
    "or ~/.corral/images; `corral image` finds it).",
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
@click.option(
    "--metrics-listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve Prometheus metrics of the master and every agent (labelled agent_id) "
    "at http://HOST:PORT/metrics (default: off).",
)
@click.pass_context
@handle_errors
def local(
    ctx: click.Context,
    agents: int,
    port: int,
    work_dir: Path | None,
    fresh: bool,
    image_store: Path | None,
    agent_resources: str | None,
    job_file: Path | None,
    output: bool,
    batch: bool,
    services: bool,
    allowed_host_paths: str,
    image_import_dirs: tuple[Path, ...],
    insecure: bool,
    metrics_listen: str | None,
) -> None:
    """Start an embedded cluster: a master and N agents in one process, no ZooKeeper.

    It makes a CA of its own in WORK_DIR/tls and speaks mutual TLS (unless
    --insecure); the CLI finds the master and the operator's certificate
    through ~/.corral/local.json.

    Its state survives a restart, `kill -9` included: the agents come back
    under their ids and take back the tasks still running, and the batch jobs
    and services are kept. --fresh starts from nothing. A second `corral
    local` on the same work dir is refused.
    """
    import asyncio

    from corral.cli.discovery import operator_name, remove_local, state_dir, write_local
    from corral.cli.local import LocalCluster, claim_state_dir, serve_until_signal
    from corral.resources import Resources

    if agents < 1:
        fail("--agents: must be at least 1")
    ctx.obj["log_level"] = (
        ctx.obj.get("log_level") or os.environ.get("CORRAL_LOG_LEVEL") or ("warning" if job_file else "info")
    )
    _daemon_logging(ctx)
    from corral.cli.batch import read_job_file, submit_local

    job = read_job_file(job_file) if job_file else None
    res = Resources.parse(agent_resources) if agent_resources else None
    wd = (work_dir or state_dir() / "local").absolute()
    lock = claim_state_dir(wd, fresh)
    images_dir = image_store or Path(os.environ.get("CORRAL_IMAGE_STORE") or state_dir() / "images")

    async def main() -> int:
        cluster = LocalCluster(
            agents=agents,
            work_dir=wd,
            listen=f"127.0.0.1:{port}",
            agent_resources=res,
            image_store=images_dir,
            image_import_dirs=tuple(p.resolve() for p in image_import_dirs),
            allowed_host_paths=_allowed_host_paths(allowed_host_paths),
            tls=not insecure,
            metrics_listen=metrics_listen,
        )
        try:
            await cluster.start()
        except RuntimeError as e:
            fail(f"could not start the master on port {port}: {e} (try --port 0)")
        path = write_local(
            cluster.master_address, wd, cluster.tls_files(f"operator:{operator_name()}"), images_dir
        )
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
            if cluster.metrics is not None:
                console.print(f"  metrics at http://{cluster.metrics.address}/metrics", highlight=False)
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

    try:
        code = asyncio.run(main())
    finally:
        lock.release()
    sys.exit(code)
