"""The CLI's output, ids and exit codes (docs/cli.md), against a real `corral local`:
-o json/yaml shapes, tab-separated output when piped, -o wide, id prefixes,
frameworks by name, one agent id in every view, and the exit codes 0-4."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli import _local, corral, wait_for_agents

from corral.testing import corral_command

pytestmark = [pytest.mark.root]

AGENT_KEYS = {"id", "hostname", "state", "connected", "draining", "total", "allocated", "task_count"}
TASK_KEYS = {"id", "framework_id", "agent_id", "hostname", "state", "exit_code", "resources"}
FRAMEWORK_KEYS = {"id", "name", "roles", "state", "task_count", "allocated"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    yield from _local(tmp_path_factory, "cpus:1;mem:1024")


@pytest.fixture(scope="module")
def failed_job(cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A batch job whose task 1 of 2 fails: its id."""
    wait_for_agents(cluster, 2)
    path = tmp_path_factory.mktemp("jobs") / "half.toml"
    path.write_text(
        'name = "half"\n[[tasks]]\nname = "t"\ncount = 2\ncommand = "test $CORRAL_TASK_INDEX -ne 1"\n'
    )
    res = corral(cluster, "submit", str(path), "--wait")
    assert res.returncode == 1, res.stdout + res.stderr  # the work failed
    jobs = json.loads(corral(cluster, "jobs", "-o", "json").stdout)
    return str(next(j["id"] for j in jobs if j["name"] == "half"))


def as_json(env: dict[str, str], *args: str) -> Any:
    res = corral(env, *args, "-o", "json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_json_shapes_of_every_list_command(cluster: dict[str, str], failed_job: str) -> None:
    agents = as_json(cluster, "agents")
    assert len(agents) == 2
    assert set(agents[0]) >= AGENT_KEYS
    assert agents[0]["total"] == {"cpus": 1.0, "mem_bytes": 1024 << 20, "disk_bytes": 0}
    frameworks = as_json(cluster, "frameworks")
    assert {f["name"] for f in frameworks} >= {"batch", "service"}
    assert set(frameworks[0]) >= FRAMEWORK_KEYS
    tasks = as_json(cluster, "tasks", "--all")
    assert tasks
    assert set(tasks[0]) >= TASK_KEYS
    assert {t["exit_code"] for t in tasks if t["id"].startswith(failed_job)} == {0, 1}
    assert tasks[0]["resources"]["mem_bytes"] > 0
    jobs = as_json(cluster, "jobs")
    assert {"id", "kind", "state", "total", "counts"} <= set(jobs[0])
    job = as_json_any(cluster, "job", failed_job)  # a FAILED job exits 1 but prints its record
    assert {"id", "state", "tasks"} <= set(job)
    assert job["state"] == "FAILED"
    roles = as_json(cluster, "roles")
    assert {"role", "weight", "share", "guarantee", "limit", "consumed"} <= set(roles[0])
    assert as_json(cluster, "quota", "list") == []
    assert as_json(cluster, "service", "list") == []
    explained = as_json(cluster, "explain", "batch")
    assert {"framework_id", "roles", "reasons", "pending"} <= set(explained)
    listed = yaml.safe_load(corral(cluster, "agents", "-o", "yaml").stdout)
    assert [a["id"] for a in listed] == [a["id"] for a in agents]


def as_json_any(env: dict[str, str], *args: str) -> Any:
    return json.loads(corral(env, *args, "-o", "json").stdout)


def test_piped_output_is_tab_separated_and_wide_adds_columns(cluster: dict[str, str]) -> None:
    out = corral(cluster, "agents").stdout
    lines = out.splitlines()
    assert lines[0].split("\t")[:3] == ["id", "hostname", "state"]
    assert not any(ch in out for ch in "┃│━─")  # no box drawing
    ids = [a["id"] for a in as_json(cluster, "agents")]
    assert [ln.split("\t")[0] for ln in lines[1:]] == ids  # full ids, not truncated
    wide = corral(cluster, "agents", "-o", "wide").stdout.splitlines()[0].split("\t")
    assert set(wide) - set(lines[0].split("\t")) >= {"offered", "registered", "version"}


def test_a_terminal_keeps_the_box_table(cluster: dict[str, str]) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [*corral_command(), "agents"],
            env={**cluster, "COLUMNS": "250"},
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the writer is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0, proc.stderr
    assert "┃" in b"".join(chunks).decode(errors="replace")


def test_one_agent_id_in_every_view(cluster: dict[str, str], failed_job: str) -> None:
    agents = {a["id"]: a["hostname"] for a in as_json(cluster, "agents")}
    tasks = [t for t in as_json(cluster, "tasks", "--all") if t["id"].startswith(failed_job)]
    assert tasks
    assert all(agents[t["agent_id"]] == t["hostname"] for t in tasks)
    job = as_json_any(cluster, "job", failed_job)
    assert {t["agent_id"] for t in job["tasks"]} == {t["agent_id"] for t in tasks}
    lines = corral(cluster, "job", failed_job).stdout.splitlines()
    header = lines[0].split("\t")
    shown = {ln.split("\t")[header.index("agent")] for ln in lines[1:]}
    assert shown == {t["agent_id"] for t in tasks}


def test_prefixes_and_framework_names(cluster: dict[str, str], failed_job: str) -> None:
    frameworks = {f["name"]: f["id"] for f in as_json(cluster, "frameworks")}
    by_name = as_json(cluster, "tasks", "--all", "--framework", "batch")
    by_prefix = as_json(cluster, "tasks", "--all", "--framework", frameworks["batch"][:7])
    assert by_name == by_prefix
    assert {t["framework_id"] for t in by_name} == {frameworks["batch"]}
    assert as_json_any(cluster, "job", failed_job[:6])["id"] == failed_job

    agents = [a["id"] for a in as_json(cluster, "agents")]
    common = agents[0][: len(agents[0]) - 1]  # "…-S" of "…-S1": both agents
    ambiguous = corral(cluster, "drain", common)
    assert ambiguous.returncode == 4
    assert "ambiguous" in ambiguous.stderr
    assert all(a in ambiguous.stderr for a in agents)
    missing = corral(cluster, "tasks", "--framework", "no-such-framework")
    assert missing.returncode == 4
    assert "no framework has this id or name" in missing.stderr
    assert corral(cluster, "job", "no-such-job").returncode == 4
    task = next(t["id"] for t in as_json(cluster, "tasks", "--all") if t["id"].startswith(failed_job))
    logs = corral(cluster, "logs", task[: len(task) - 2])
    assert logs.returncode in (0, 4), logs.stderr  # unique or ambiguous (".a1"/".a2"), never a traceback


def test_exit_codes(cluster: dict[str, str], failed_job: str, tmp_path: Path) -> None:
    assert corral(cluster, "agents").returncode == 0
    assert corral(cluster, "job", failed_job).returncode == 1  # the work failed
    assert corral(cluster, "run", "--", "exit 42").returncode == 42  # the task's own status
    assert corral(cluster, "agents", "-o", "xml").returncode == 2  # usage
    assert corral(cluster, "tasks", "--bogus").returncode == 2
    assert corral(cluster, "run", "--cpus", "9", "--", "true").returncode == 4  # never fits: refused
    nobody = corral(cluster, "agents", "--master", "127.0.0.1:1", timeout=30)
    assert nobody.returncode == 3, nobody.stderr
    assert "cannot reach the master" in nobody.stderr
    home = {**os.environ, "CORRAL_HOME": str(tmp_path)}
    home.pop("CORRAL_MASTER", None)
    assert corral(home, "agents").returncode == 3  # no cluster found
    assert corral(cluster, "kill", "no-such-task").returncode == 4
