"""`corral local` keeps its state across restarts, `kill -9` included, and
refuses a second instance on the same state dir (issue 18).

Real processes: `corral local` in a subprocess, killed with SIGKILL while a
batch job's tasks sleep, then started again on the same CORRAL_HOME. The
tasks must neither run on unsupervised nor run twice: each task appends a
line to a file on the host when it starts, and the job must end with every
task started once, on its first attempt, under the same agent ids.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.cli.local import cgroup_prefix_for
from corral.testing import corral_command

pytestmark = [pytest.mark.root, pytest.mark.slow]

TASKS = 4


def _corral(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*corral_command(), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


class Local:
    """One `corral local` process on ``home``."""

    def __init__(self, home: Path, *extra: str) -> None:
        self.home = home
        self.env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_LOG_LEVEL": "warning"}
        self.env.pop("CORRAL_MASTER", None)
        self.log = home / f"local-{time.monotonic_ns()}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    *corral_command(),
                    "local",
                    "--agents",
                    "2",
                    "--port",
                    "0",
                    "--agent-resources",
                    "cpus:1;mem:512",
                    *extra,
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )

    def output(self) -> str:
        return self.log.read_text()

    def wait_serving(self) -> None:
        deadline = time.monotonic() + 60
        while "clients find it" not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"corral local did not start: {self.output()}")
            time.sleep(0.1)

    def agent_ids(self) -> set[str]:
        return {line.split()[1].rstrip(":") for line in self.output().splitlines() if "  agent " in line}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    yield home
    # Whatever a failed test left: every task under the cluster's cgroups.
    prefix = cgroup_prefix_for(home / "local")
    for procs in Path("/sys/fs/cgroup").glob(f"*/{prefix}/**/cgroup.procs"):
        for pid in procs.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def _job(env: dict[str, str], job_id: str) -> dict[str, Any]:
    """The job as the batch service reports it (its HTTP API, through the CLI's client)."""
    code = (
        "import json, sys\n"
        "from corral.cli.batch import batch_client\n"
        "print(json.dumps(batch_client(None, None).job(sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, job_id], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert isinstance(data, dict)
    return data


def test_kill_9_and_restart_runs_each_task_once(home: Path, tmp_path: Path) -> None:
    # The tasks' /tmp is their own: they append to a host directory bound in.
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    starts = out / "starts"
    starts.write_text("")
    starts.chmod(0o666)
    job_file = tmp_path / "sweep.toml"
    job_file.write_text(
        f'name = "sweep"\n[[tasks]]\nname = "s"\ncount = {TASKS}\ncpus = 0.1\nmem = 32\n'
        'command = "echo $CORRAL_TASK_INDEX >> /mnt/starts; sleep 12; echo done"\n'
        f'volumes = [{{ host_path = "{out}", container_path = "/mnt" }}]\n'
    )
    paths = ("--allowed-host-paths", str(out))
    first = Local(home, *paths)
    second: Local | None = None
    third: Local | None = None
    try:
        first.wait_serving()
        agents_before = first.agent_ids()
        assert len(agents_before) == 2, first.output()
        submitted = _corral(first.env, "submit", str(job_file))
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.split()[-1]
        deadline = time.monotonic() + 30
        while len(starts.read_text().split()) < TASKS:
            assert time.monotonic() < deadline, (
                f"the tasks did not all start: {starts.read_text()!r}; {_job(first.env, job_id)}"
            )
            time.sleep(0.1)

        # A second instance on the same state dir is refused, naming the pid;
        # the first one's state and discovery file are untouched.
        refused = Local(home, *paths)
        refused.proc.wait(timeout=30)
        assert refused.proc.returncode == 4, refused.output()
        assert f"pid {first.proc.pid}" in refused.output()
        assert json.loads((home / "local.json").read_text())["pid"] == first.proc.pid

        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)

        second = Local(home, *paths)
        second.wait_serving()
        assert f"pid {first.proc.pid} did not stop cleanly" in second.output()
        assert second.agent_ids() == agents_before  # the agents came back under their ids

        deadline = time.monotonic() + 60
        job = _job(second.env, job_id)
        while job["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            assert time.monotonic() < deadline, f"the job did not end: {job}"
            time.sleep(0.5)
            job = _job(second.env, job_id)
        assert job["state"] == "SUCCEEDED", job
        tasks = job["tasks"]
        assert isinstance(tasks, list)
        assert [t["attempts"] for t in tasks] == [1] * TASKS, tasks
        # Each task started exactly once, across the kill and the restart.
        assert sorted(starts.read_text().split()) == [str(i) for i in range(TASKS)]
        for t in tasks:
            logs = _corral(second.env, "logs", t["history"][-1]["task_id"])
            assert logs.stdout == "done\n", logs.stdout + logs.stderr

        # A clean stop keeps the state too; --fresh starts over with new agents.
        second.stop()
        assert second.proc.returncode == 0, second.output()
        third = Local(home, "--fresh")
        third.wait_serving()
        assert not (third.agent_ids() & agents_before), third.output()
        assert "sweep" not in _corral(third.env, "jobs").stdout
    finally:
        for p in (first, second, third):
            if p is not None:
                p.stop()
