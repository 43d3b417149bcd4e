"""`corral chaos` for real, briefly: 3 ZooKeeper nodes, 3 masters and 3 agents,
each in its own network namespace; a batch and a service workload through the
real frameworks; faults from a fixed seed (CORRAL_CHAOS_SEED overrides it) for
45 s. Seed 16 with faults of at most 5 s gives six faults of six kinds: an
agent partitioned and paused, ZooKeeper's quorum lost, a master paused, the
leader partitioned, a master killed. Every invariant holds, and nothing of the cluster or the workload is
left. The printed replay command reproduces a failing run."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from test_cluster import _nothing_left, _requirements

from corral.testing import corral_command

pytestmark = [pytest.mark.root, pytest.mark.slow]
DURATION_S = 45


@pytest.mark.timeout(300)
def test_a_short_chaos_run_holds_every_invariant_and_leaves_nothing(tmp_path: Path) -> None:
    _requirements()
    seed = int(os.environ.get("CORRAL_CHAOS_SEED", "16"))
    name = f"c{os.getpid() % 100000}"
    home = tmp_path / "home"
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_LOG_LEVEL": "warning"}
    out = tmp_path / "chaos.json"
    cmd = [
        *corral_command(), "chaos", "--seed", str(seed), "--duration", str(DURATION_S),
        "--masters", "3", "--agents", "3", "--max-fault", "5", "--name", name, "--json", str(out),
    ]  # fmt: skip
    print(f"seed {seed}: {' '.join(cmd[len(corral_command()) :])}")
    started = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env, check=False)
    finally:
        if (home / "clusters" / f"{name}.json").exists():  # only if the run could not clean up
            subprocess.run([*corral_command(), "cluster", "down", name], env=env, timeout=120, check=False)
    took = time.monotonic() - started
    print(res.stdout)
    print(res.stderr[-4000:])
    print(f"chaos run with seed {seed} took {took:.0f}s")
    assert out.exists(), res.stderr
    result = json.loads(out.read_text())
    assert result["seed"] == seed
    failed = [c for c in result["checks"] if not c["ok"]]
    assert res.returncode == 0, f"seed {seed}: {failed or result['error']}\nreplay: {result['replay']}"
    assert result["ok"]
    assert len(result["checks"]) == 7
    assert len(result["faults"]) >= (6 if seed == 16 else 1), result["faults"]
    assert all(not f["errors"] for f in result["faults"]), result["faults"]
    assert result["jobs"] >= 10
    assert result["tasks"] >= 10
    assert "all invariants held" in res.stdout
    _nothing_left({"plan": result["cluster"]}, home)
