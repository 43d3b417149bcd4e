"""The workload of a chaos run, through the real frameworks and clients.

The batch and service frameworks run as processes on this host
(``corral framework run batch|service``, each with its own SQLite store and
API), like a user's would; the service is deployed with ``corral service
deploy``; batch jobs are submitted every ``submit_every_s`` through the batch
service's API (the client ``corral submit`` uses). Job sizes and task
lengths come from the run's seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from corral.cluster import tls as cluster_tls
from corral.cluster.state import ClusterState
from corral.cluster.tls import operator_credentials
from corral.errors import CorralError
from corral.frameworks.batch.api import BatchClient
from corral.frameworks.service.api import ServiceClient
from corral.testing import corral_command

log = structlog.get_logger("corral.chaos.workload")
JOB_FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")
SERVICE_NAME = "chaos-svc"
_START_TIMEOUT_S = 60.0
_STOP_GRACE_S = 10.0


class WorkloadError(CorralError):
    """A framework of the workload could not be started or reached."""


@dataclass
class FrameworkViews:
    """What the frameworks say at the end: every batch job with its tasks and
    attempts, and the service with its recent instances."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    service: dict[str, Any] = field(default_factory=dict)
    framework_ids: dict[str, str] = field(default_factory=dict)  # kind -> framework id


@dataclass
class _Process:
    kind: str
    proc: subprocess.Popen[bytes]
    address: str = ""


class Workload:
    """Starts the frameworks, submits jobs, and stops everything it started."""

    def __init__(
        self,
        master: str,
        directory: Path,
        seed: int,
        *,
        agents: int,
        submit_every_s: float = 2.0,
        max_jobs: int = 10_000,
        cluster: ClusterState | None = None,
    ) -> None:
        self.master = master
        #: a TLS cluster: the frameworks get certificates of its CA, the clients the operator's
        self.cluster = cluster if cluster is not None and cluster.tls is not None else None
        self.directory = directory
        self.rng = random.Random(f"{seed}/workload")
        self.agents = agents
        self.submit_every_s = submit_every_s
        self.max_jobs = max_jobs
        self.env = {
            **os.environ,
            "CORRAL_HOME": str(directory / "home"),  # the frameworks' discovery files stay ours
            "CORRAL_LOG_LEVEL": os.environ.get("CORRAL_NODE_LOG_LEVEL", "info"),
        }
        self.processes: dict[str, _Process] = {}
        self.job_ids: list[str] = []
        self.submit_errors: list[str] = []
        self._next_submit = 0.0
        self.batch: BatchClient | None = None
        self.service: ServiceClient | None = None

    # -- start ------------------------------------------------------------------

    def start(self) -> None:
        """Both frameworks serving and subscribed, and the service deployed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for kind in ("batch", "service"):
            self._spawn(kind)
        deadline = time.monotonic() + _START_TIMEOUT_S
        for kind in ("batch", "service"):
            self.processes[kind].address = self._wait_address(kind, deadline)
        operator = operator_credentials(self.cluster) if self.cluster is not None else None
        self.batch = BatchClient(self.processes["batch"].address, timeout_s=10.0, credentials=operator)
        self.service = ServiceClient(self.processes["service"].address, timeout_s=10.0, credentials=operator)
        for client in (self.batch, self.service):
            while not client.state().get("connected"):
                if time.monotonic() > deadline:
                    raise WorkloadError(f"{client.what} did not subscribe to {self.master} in time")
                time.sleep(0.2)
        self._deploy_service()

    def _spawn(self, kind: str) -> None:
        config = self.directory / f"{kind}.toml"
        config.write_text(
            f'db = "{self.directory / (kind + ".db")}"\nname = "chaos-{kind}"\nfailover_timeout_s = 600\n'
        )
        env = self.env
        if self.cluster is not None:
            # The bundled framework's principal: the test cluster's policy lets it
            # run the workload's jobs as root (master/authz.py LOCAL_POLICY).
            env = {**env, **cluster_tls.env(cluster_tls.files_of(self.cluster, f"framework:{kind}"))}
        with (self.directory / f"{kind}.log").open("ab") as out:
            proc = subprocess.Popen(
                [
                    *corral_command(),
                    "framework",
                    "run",
                    kind,
                    "--master",
                    self.master,
                    "--config",
                    str(config),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
            )
        self.processes[kind] = _Process(kind, proc)

    def _wait_address(self, kind: str, deadline: float) -> str:
        found = self.directory / "home" / f"{kind}.json"
        p = self.processes[kind].proc
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                data = json.loads(found.read_text())
                if data["pid"] == p.pid:
                    return str(data["address"])
            if p.poll() is not None:
                raise WorkloadError(
                    f"the {kind} framework exited ({p.returncode}); see {self.directory}/{kind}.log"
                )
            if time.monotonic() > deadline:
                raise WorkloadError(
                    f"the {kind} framework did not start in time; see {self.directory}/{kind}.log"
                )
            time.sleep(0.1)

    def _deploy_service(self) -> None:
        instances = min(2, self.agents)
        spec = self.directory / f"{SERVICE_NAME}.toml"
        spec.write_text(
            f'name = "{SERVICE_NAME}"\ninstances = {instances}\ncommand = "sleep 3600"\n'
            'cpus = 0.2\nmem = 16\nconstraints = ["unique hostname"]\n'
        )
        address = self.processes["service"].address
        env = self.env
        if self.cluster is not None and self.cluster.tls is not None:
            env = {**env, **cluster_tls.env(self.cluster.tls)}  # the operator's certificate
        res = subprocess.run(
            [*corral_command(), "service", "deploy", "--service", address, str(spec)],
            capture_output=True, text=True, timeout=60, env=env, check=False,
        )  # fmt: skip
        if res.returncode != 0:
            raise WorkloadError(f"corral service deploy failed: {res.stderr.strip() or res.stdout.strip()}")

    # -- while running ----------------------------------------------------------------

    def job_spec(self) -> dict[str, Any]:
        """The next job: 1-3 tasks of 1-3 s each, retried twice if lost or failed."""
        count = self.rng.randint(1, 3)
        seconds = self.rng.randint(1, 3)
        return {
            "name": "chaos",
            "tasks": [
                {
                    "name": "work",
                    "count": count,
                    "cpus": 0.2,
                    "mem": 16,
                    "command": f"sleep {seconds}",
                    "retries": 2,
                    "backoff_s": 0.5,
                }
            ],
        }

    def tick(self, now: float) -> None:
        """Submit the next job if it is due (``now``: monotonic seconds)."""
        if self.batch is None or now < self._next_submit or len(self.job_ids) >= self.max_jobs:
            return
        self._next_submit = now + self.submit_every_s
        spec = self.job_spec()
        try:
            self.job_ids.append(self.batch.submit(spec, "chaos")["job_id"])
        except CorralError as e:
            self.submit_errors.append(str(e))

    def unfinished_jobs(self) -> list[str]:
        """Jobs not yet in a final state (all of them if the service cannot be asked)."""
        if self.batch is None:
            return list(self.job_ids)
        try:
            jobs = {j["id"]: j["state"] for j in self.batch.jobs()["jobs"]}
        except CorralError:
            return list(self.job_ids)
        return [j for j in self.job_ids if jobs.get(j) not in JOB_FINAL]

    def views(self) -> FrameworkViews:
        """The frameworks' own account of every job, task and instance."""
        out = FrameworkViews()
        if self.batch is not None:
            with contextlib.suppress(CorralError):
                out.framework_ids["batch"] = str(self.batch.state().get("framework_id", ""))
            for job_id in self.job_ids:
                try:
                    out.jobs.append(self.batch.job(job_id))
                except CorralError as e:
                    out.jobs.append({"id": job_id, "state": "UNKNOWN", "tasks": [], "error": str(e)})
        if self.service is not None:
            with contextlib.suppress(CorralError):
                out.framework_ids["service"] = str(self.service.state().get("framework_id", ""))
            try:
                out.service = self.service.service(SERVICE_NAME)
            except CorralError as e:
                out.service = {"name": SERVICE_NAME, "error": str(e)}
        return out

    # -- stop ------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop both frameworks (SIGTERM, SIGKILL after a grace period). Their
        tasks are torn down by the caller (or with the cluster)."""
        for p in self.processes.values():
            if p.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for p in self.processes.values():
            try:
                p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(timeout=10)
