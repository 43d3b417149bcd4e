"""Wall-clock time of ``corral`` CLI invocations, as a user at a shell sees them.

    python bench/cli_startup.py                      # --help, run --help, import time
    python bench/cli_startup.py --run -n 20 --json out.json   # also `corral run -- true`

Each command runs ``-n`` times as a fresh subprocess, after one warm-up run
that writes the .pyc files an installation has (``PYTHONDONTWRITEBYTECODE``
is dropped from the children's environment) and warms the page cache. It
prints the median and p90 wall time in milliseconds, and the median CPU time
(user+system) of the CLI process, which other load on the machine disturbs
less. ``--run`` starts a ``corral local`` cluster of its own (one agent,
mutual TLS as by default, a temporary ``CORRAL_HOME``), waits until it is
idle, times ``corral run -- true`` against it, and stops it.
``--master`` times against a running cluster instead (``CORRAL_HOME`` of the
caller). The import time of ``corral.cli.main`` comes from
``python -X importtime`` (the cumulative figure of its last line).

The load average is printed and written beside the figures: on a shared
machine they mean little without it. This is a benchmark, not a test: it
asserts nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

MAX_RUNS = 500


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def corral_command() -> list[str]:
    """The installed ``corral`` script beside this interpreter, as a shell runs it
    (not ``python -m``, which imports differently)."""
    script = Path(sys.executable).parent / "corral"
    if not script.exists():
        raise SystemExit(f"no corral script at {script}: install the package (make .venv/bin/corral)")
    return [str(script)]


def time_command(argv: Sequence[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median and p90 wall time of ``argv`` over ``runs`` runs, after one warm-up."""
    samples: list[float] = []
    cpu: list[float] = []
    for i in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=60)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
        if i > 0:
            samples.append(elapsed)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {
        "runs": runs,
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p90_ms": round(percentile(samples, 90) * 1000, 1),
        "min_ms": round(min(samples) * 1000, 1),
        # The CLI process's own CPU time (user+system): less at the mercy of
        # other load on the machine than wall time.
        "cpu_p50_ms": round(statistics.median(cpu) * 1000, 1),
    }


def import_time_ms(module: str, env: dict[str, str], runs: int) -> float:
    """Median cumulative import time of ``module`` (``-X importtime``), in ms."""
    figures: list[float] = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        last = [line for line in done.stderr.splitlines() if line.rstrip().endswith(f"| {module}")][-1]
        figures.append(int(last.split("|")[1]) / 1000)
    return round(statistics.median(figures), 1)


def start_local(home: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``corral local`` with one agent; returns once its clients can find it."""
    proc = subprocess.Popen(
        [*corral_command(), "local", "-n", "1", "--port", "0", "--work-dir", str(home / "work")],
        env={**env, "CORRAL_LOG_LEVEL": "warning"},
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (home / "local.json").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit("corral local did not start within 60 s")
        time.sleep(0.05)
    # The batch and service frameworks register after the file is written; let
    # them settle so the timed runs meet an idle cluster.
    time.sleep(2)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--runs", type=int, default=20, help="timed runs per command (default 20)")
    ap.add_argument("--run", action="store_true", help="also time `corral run -- true` on a corral local")
    ap.add_argument("--master", action="store_true", help="with --run: use the running local cluster")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if not 1 <= args.runs <= MAX_RUNS:
        ap.error(f"--runs: between 1 and {MAX_RUNS}")

    corral = corral_command()
    # A user's installation has compiled .pyc files; without them every run
    # compiles the CLI's modules again, which is not what is being measured.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out: dict[str, object] = {"load_average_before": os.getloadavg(), "cores": os.cpu_count() or 0}
    out["import_corral_cli_main_ms"] = import_time_ms("corral.cli.main", env, min(args.runs, 5))
    out["help"] = time_command([*corral, "--help"], args.runs, env)
    out["run_help"] = time_command([*corral, "run", "--help"], args.runs, env)
    if args.run:
        with tempfile.TemporaryDirectory(prefix="corral-bench-cli-") as tmp:
            run_env = env if args.master else {**env, "CORRAL_HOME": tmp}
            proc = None if args.master else start_local(Path(tmp), run_env)
            try:
                out["run_true"] = time_command([*corral, "run", "--", "true"], args.runs, run_env)
            finally:
                if proc is not None:
                    stop(proc)
    out["load_average_after"] = os.getloadavg()

    width = max(len(k) for k in out)
    for name, value in out.items():
        shown = "  ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else value
        print(f"{name:<{width}}  {shown}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
