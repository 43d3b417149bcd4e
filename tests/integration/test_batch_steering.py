"""Steering batch jobs through the CLI against a real cluster and batch
service: a throttled array never exceeds its max_running, hold and release,
requeue, `submit --after` across jobs, summaries that name failed tasks,
`submit --wait` on a periodic job, and the slot a cron run sees."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.frameworks.batch.engine import JOB_FINAL
from corral.frameworks.batch.service import BatchService
from corral.testing import eventually
from corral.testing import run_corral as cli

pytestmark = [pytest.mark.root]


def submitted(out: str) -> str:
    return out.split("submitted job ")[1].split(maxsplit=1)[0]


async def test_a_throttled_array_never_runs_more_than_max_running_at_once(
    service: BatchService, tmp_path: Path, shared_dir: Path
) -> None:
    # Each task records its start and end; overlaps are counted from the
    # tasks' own clock, not from what the service saw.
    spec = tmp_path / "throttled.toml"
    log = shared_dir / "log"
    spec.write_text(
        'name = "throttled"\n[[tasks]]\nname = "t"\ncount = 12\ncpus = 0.1\nmax_running = 3\n'
        f'command = "echo start $(date +%s.%N) >> {log}; sleep 0.3; echo end $(date +%s.%N) >> {log}"\n'
    )
    code, out = await cli("submit", str(spec), "--wait", "--batch", service.address)
    assert code == 0, out
    events = sorted((float(t), kind) for kind, t in (line.split() for line in log.read_text().splitlines()))
    assert len(events) == 24
    running = peak = 0
    for _, kind in events:  # ("end" sorts before "start" at the same instant)
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak <= 3, events
    assert peak >= 2  # it did run several at once (the cluster has 4 cpus)


async def test_hold_release_and_requeue_from_the_cli(service: BatchService, tmp_path: Path) -> None:
    addr = service.address
    blocker = tmp_path / "blocker.toml"
    blocker.write_text('name = "blocker"\n[[tasks]]\ncommand = "sleep 4"\n')
    code, out = await cli("submit", str(blocker), "--batch", addr)
    assert code == 0, out
    blocker_id = submitted(out)
    spec = tmp_path / "two.toml"
    spec.write_text('name = "two"\n[[tasks]]\nname = "t"\ncount = 2\ncommand = "exit $CORRAL_TASK_INDEX"\n')
    code, out = await cli("submit", str(spec), "--after", blocker_id, "--batch", addr)
    assert code == 0, out
    job_id = submitted(out)
    code, out = await cli("hold", job_id, "--batch", addr)
    assert code == 0, out
    assert "held" in out
    # The blocker ends, the held job's tasks become pending, and stay so.
    await eventually(lambda: service.engine.jobs[blocker_id].state == "SUCCEEDED", 30, "the blocker to end")
    await asyncio.sleep(1.0)
    assert service.engine.job_counts(job_id) == {"PENDING": 2}
    code, out = await cli("release", job_id, "--batch", addr)
    assert code == 0, out
    assert f"{job_id}: " in out
    await eventually(lambda: service.engine.jobs[job_id].state in JOB_FINAL, 30, "the job to end")
    code, out = await cli("job", job_id, "--batch", addr)
    assert code == 1, out  # task 1 exits 1: the job failed
    code, out = await cli("hold", job_id, "--batch", addr)
    assert code == 4, out
    assert "already failed: nothing to hold" in out
    code, out = await cli("requeue", job_id, "--failed", "--batch", addr)
    assert code == 0, out
    assert "requeued 1 task(s)" in out
    await eventually(lambda: service.engine.jobs[job_id].state in JOB_FINAL, 30, "the requeued job to end")
    view = service.engine.job_view(job_id)
    assert [t["attempts"] for t in view["tasks"]] == [1, 2]  # task 0 finished and was not run again
    code, out = await cli("requeue", job_id[:8], "--batch", addr)  # a prefix, the whole job
    assert code == 0, out
    assert "requeued 2 task(s)" in out


async def test_submit_after_a_failed_job_skips_and_the_summary_names_the_failed_tasks(
    service: BatchService, tmp_path: Path
) -> None:
    addr = service.address
    first = tmp_path / "first.toml"
    first.write_text(
        'name = "first"\n[[tasks]]\nname = "step"\ncount = 3\ncommand = "test $CORRAL_TASK_INDEX != 1"\n'
    )
    second = tmp_path / "second.toml"
    second.write_text('name = "second"\n[[tasks]]\nname = "t"\ncommand = "true"\n')
    code, out = await cli("submit", str(first), "--batch", addr)
    assert code == 0, out
    first_id = submitted(out)
    code, out = await cli("submit", str(second), "--after", "first", "--wait", "--batch", addr)
    assert code == 1, out
    assert f"not run: dependency afterok:{first_id} can no longer be met: {first_id} failed" in out
    assert "skipped: t[0]" in out
    code, out = await cli(
        "submit", str(second), "--after", f"afternotok:{first_id}", "--wait", "--batch", addr
    )
    assert code == 0, out
    code, out = await cli("job", first_id, "--follow", "--batch", addr)
    assert code == 1, out
    assert "2/3 tasks finished" in out
    assert "failed: step[1] (1)" in out
    code, out = await cli("submit", str(second), "--after", "no-such-job", "--batch", addr)
    assert code == 2, out
    assert "after[0]: no job has the id or name 'no-such-job'" in out


async def test_submit_wait_on_a_periodic_job_follows_its_next_run_which_knows_its_slot(
    service: BatchService, tmp_path: Path, shared_dir: Path
) -> None:
    spec = tmp_path / "tick.toml"
    seen = shared_dir / "slot"
    spec.write_text(
        'name = "tick"\nschedule = "*/2 * * * * *"\n'
        f'[[tasks]]\ncommand = "echo $CORRAL_SCHEDULED_TIME > {seen}"\n'
    )
    code, out = await cli("submit", str(spec), "--wait", "--batch", service.address)
    assert code == 0, out
    assert "waiting for its next run at" in out
    assert "run tick-" in out
    assert "succeeded" in out
    slot = int(seen.read_text())
    assert slot % 2 == 0
    runs = service.engine.job_view("tick")["runs"]
    assert slot in [int(r["scheduled_at"]) for r in runs]
    service.engine.cancel("tick")


async def test_accounting_matches_what_the_task_really_used(service: BatchService, tmp_path: Path) -> None:
    # 0.6 s of CPU on one core and 80 MiB touched: the cgroup's figures, read
    # as the task ended, come back with the attempt (and on `job --attempts`).
    burn = (
        "python3 -c 'import time; b = bytearray(80 << 20); t = time.process_time()\n"
        "while time.process_time() - t < 0.6: pass'"
    )
    job_id = service.engine.submit({"name": "acct", "tasks": [{"name": "t", "mem": 256, "command": burn}]})[
        "job_id"
    ]
    await eventually(lambda: service.engine.jobs[job_id].state in JOB_FINAL, 30, "the job to end")
    view = service.engine.job_view(job_id)
    assert view["state"] == "SUCCEEDED", view["tasks"][0]["message"]
    (a,) = view["tasks"][0]["history"]
    assert 0.55 <= a["cpu_time_s"] < 3.0, a
    assert 80 << 20 <= a["mem_peak_bytes"] < 256 << 20, a
    assert a["queued_at"] <= a["launched_at"] <= a["started_at"] + 1.0  # (two hosts' clocks: here, one)
    assert a["finished_at"] - a["started_at"] >= 0.55
    code, out = await cli("job", job_id, "--attempts", "-o", "json", "--batch", service.address)
    assert code == 0, out
    assert '"cpu_time_s"' in out
    code, out = await cli("jobs", "--since", "1h", "--batch", service.address)
    assert code == 0, out
    assert job_id in out
    code, out = await cli("jobs", "--since", "2000-01-01T00:00", "-o", "json", "--batch", service.address)
    assert job_id in out
    code, out = await cli("jobs", "--since", "soon", "--batch", service.address)
    assert code == 2, out
    assert "neither a duration" in out
