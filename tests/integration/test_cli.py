"""The CLI as a user runs it: `corral local` in the background, then clients
that find it without flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.cli.local import cgroup_prefix_for
from corral.testing import corral_command

pytestmark = [pytest.mark.root]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    yield from _local(tmp_path_factory, "cpus:1;mem:1024")


def _local(
    tmp_path_factory: pytest.TempPathFactory, resources: str, agents: int = 2
) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("corral-home")
    env = {**os.environ, "CORRAL_HOME": str(home), "CORRAL_LOG_LEVEL": "warning"}
    env.pop("CORRAL_MASTER", None)
    proc = subprocess.Popen(
        [*corral_command(), "local", "--agents", str(agents), "--port", "0", "--agent-resources", resources],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (home / "local.json").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read() if proc.stdout else ""
                raise AssertionError(f"corral local did not start: {out}")
            time.sleep(0.05)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.returncode == 0, proc.stdout.read() if proc.stdout else ""
        # It removed its discovery file and every cgroup it made.
        assert not (Path(env["CORRAL_HOME"]) / "local.json").exists()
        prefix = cgroup_prefix_for(Path(env["CORRAL_HOME"]) / "local")
        leftovers = list(Path("/sys/fs/cgroup/memory").glob(f"{prefix}*"))
        assert leftovers == []


def corral(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*corral_command(), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_run_prints_output_and_returns_exit_code(local: dict[str, str]) -> None:
    ok = corral(local, "run", "--", "echo", "hello from corral")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "hello from corral\n"

    failed = corral(local, "run", "--", "sh", "-c", "echo to-stderr >&2; exit 7")
    assert failed.returncode == 7
    assert "to-stderr" in failed.stderr


def test_run_with_env_and_resources(local: dict[str, str]) -> None:
    res = corral(local, "run", "--cpus", "0.5", "--mem", "128", "-e", "WHO=world", "--", "echo hi $WHO")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "hi world"


def test_run_reports_memory_limit(local: dict[str, str]) -> None:
    res = corral(local, "run", "--mem", "48", "--", "python3", "-c", "b = bytearray(200 << 20)")
    assert res.returncode == 128 + 9
    assert "memory" in res.stderr


def test_submit_shows_progress_and_fails_when_a_task_fails(local: dict[str, str], tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        'name = "good"\n[[tasks]]\nname = "sq"\ncount = 6\ncpus = 0.1\nmem = 32\n'
        'command = "echo $((CORRAL_TASK_INDEX * CORRAL_TASK_INDEX))"\n'
    )
    res = corral(local, "submit", str(good), "--wait", "--output")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "6/6 tasks finished" in res.stdout
    assert "25" in res.stdout  # the output of sq[5]

    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "bad"\n[[tasks]]\nname = "t"\ncount = 3\ncommand = "test $CORRAL_TASK_INDEX -ne 1"\n'
    )
    res = corral(local, "submit", str(bad), "--wait")
    assert res.returncode == 1
    assert "2/3 tasks finished" in res.stdout
    assert "FAILED" in res.stdout


def test_views_list_agents_frameworks_and_tasks(local: dict[str, str]) -> None:
    agents = corral(local, "agents")
    assert agents.returncode == 0, agents.stderr
    assert agents.stdout.count("connected") == 2
    assert corral(local, "frameworks").returncode == 0
    tasks = corral(local, "tasks", "--all")
    assert tasks.returncode == 0


def test_kill_and_logs(local: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [*corral_command(), "run", "--name", "sleeper", "--", "echo started; sleep 300"],
        env=local,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        task_id = ""
        while not task_id and time.monotonic() < deadline:
            listing = corral(local, "tasks")
            task_id = next((w for w in listing.stdout.split() if w.startswith("sleeper-")), "")
            time.sleep(0.2)
        assert task_id, "the task never showed up in `corral tasks`"
        logs = corral(local, "logs", task_id)
        assert "started" in logs.stdout
        top = corral(local, "top", "--once", "--interval", "0.3", "--task", task_id)
        assert top.returncode == 0, top.stderr
        assert task_id in top.stdout
        assert "running" in top.stdout
        assert "4096" in top.stdout  # the agent's default pids limit
        missing = corral(local, "top", "--once", "--task", "no-such-task")
        assert missing.returncode == 4
        assert "task 'no-such-task': no task has this id" in missing.stderr
        killed = corral(local, "kill", task_id)
        assert killed.returncode == 0, killed.stderr
        out, _err = proc.communicate(timeout=30)
        assert proc.returncode != 0
        assert "started" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_clear_errors_without_a_cluster_and_for_bad_input(tmp_path: Path, local: dict[str, str]) -> None:
    env = {**os.environ, "CORRAL_HOME": str(tmp_path)}
    env.pop("CORRAL_MASTER", None)
    res = corral(env, "agents")
    assert res.returncode != 0
    assert "no cluster found" in res.stderr
    assert "Traceback" not in res.stderr

    missing = corral(local, "submit", str(tmp_path / "nope.toml"))
    assert missing.returncode != 0
    assert "no such file" in missing.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text('[[tasks]]\ncommand = "true"\ncpus = -1\n')
    res = corral(local, "submit", str(bad))
    assert res.returncode != 0
    assert "tasks[0].cpus" in res.stderr

    res = corral(local, "kill", "no-such-task")
    assert res.returncode != 0
    assert "no-such-task" in res.stderr


def test_local_json_names_the_master(local: dict[str, str]) -> None:
    data = json.loads((Path(local["CORRAL_HOME"]) / "local.json").read_text())
    assert data["master"].startswith("127.0.0.1:")


def test_run_with_isolation_options(local: dict[str, str]) -> None:
    res = corral(
        local, "run", "--network", "none", "--user", "65534", "--", "sh", "-c", "id -u; cat /proc/net/dev"
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "65534"
    assert [ln.split(":")[0].strip() for ln in lines[3:]] == ["lo"]
    bad = corral(local, "run", "--user", "nobody", "--", "true")
    assert bad.returncode != 0
    assert "user" in bad.stderr


def wait_for_agents(env: dict[str, str], count: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        out = corral(env, "agents").stdout
        if out.count("connected") - out.count("disconnected") >= count:
            return
        assert time.monotonic() < deadline, f"{count} agents did not register: {out}"
        time.sleep(0.2)


@pytest.fixture
def thin_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Three agents of 0.666 cpus each: issue 16's cluster."""
    yield from _local(tmp_path_factory, "cpus:0.666;mem:1024", agents=3)


def test_run_of_one_cpu_on_agents_of_two_thirds_exits_at_once_saying_why(thin_local: dict[str, str]) -> None:
    wait_for_agents(thin_local, 3)
    res = corral(thin_local, "run", "--cpus", "1", "--", "true", timeout=30)
    assert res.returncode == 4, res.stderr
    assert "no agent can ever fit this task: cpus 1 asked, the largest agent has 0.666" in res.stderr
    assert "smallest change: lower the request to cpus 0.666, mem 64" in res.stderr
    fits = corral(thin_local, "run", "--cpus", "0.666", "--", "echo", "fits", timeout=60)
    assert fits.returncode == 0, fits.stderr
    assert fits.stdout == "fits\n"


def test_run_that_no_agent_can_ever_fit_exits_at_once_saying_why(local: dict[str, str]) -> None:
    wait_for_agents(local, 2)
    started = time.monotonic()
    res = corral(local, "run", "--cpus", "1.5", "--", "true", timeout=30)
    assert res.returncode == 4, res.stderr
    assert "no agent can ever fit this task: cpus 1.5 asked, the largest agent has 1" in res.stderr
    assert "smallest change: lower the request to cpus 1, mem 64" in res.stderr
    assert time.monotonic() - started < 20


def test_submit_wait_of_a_job_no_agent_can_fit_says_why_and_explain_shows_the_change(
    local: dict[str, str], tmp_path: Path
) -> None:
    wide = {**local, "COLUMNS": "400"}
    wait_for_agents(local, 2)
    big = tmp_path / "big.toml"
    big.write_text('name = "big"\n[[tasks]]\ncommand = "true"\ncpus = 4\n')
    res = corral(wide, "submit", str(big), "--wait")
    assert res.returncode == 1, res.stdout + res.stderr
    assert (
        "unschedulable: no agent can ever fit this task: cpus 4 asked, the largest agent has 1" in res.stdout
    )

    patient = tmp_path / "patient.toml"
    patient.write_text('name = "patient"\n[[tasks]]\ncommand = "true"\ncpus = 4\nwait_for_agents = true\n')
    res = corral(wide, "submit", str(patient))
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.split("submitted job ")[1].split()[0]
    deadline = time.monotonic() + 20
    while "unschedulable" not in (jobs := corral(wide, "jobs").stdout):
        assert time.monotonic() < deadline, jobs
        time.sleep(0.2)
    assert (
        "t0 unschedulable: no agent can ever fit this task: cpus 4 asked" in jobs or "unschedulable" in jobs
    )
    assert corral(local, "quota", "set", "*", "--limit", "cpus:0.5").returncode == 0
    try:
        explained = corral(wide, "explain", "batch")
    finally:
        assert corral(local, "quota", "remove", "*").returncode == 0
        assert corral(local, "cancel", job_id).returncode == 0
    assert explained.returncode == 0, explained.stderr
    assert f"job {job_id} group" in explained.stdout
    assert (
        "NEVER FITS: no agent can ever fit this task: cpus 4 asked, the largest agent has 1"
        in explained.stdout
    )
    assert "resources rejects 2 agent(s)" in explained.stdout
    assert "smallest change: lower the request to cpus 1" in explained.stdout
    assert "quota: raise the quota limit of role * to cpus 4" in explained.stdout


def test_top_quits_on_q(local: dict[str, str]) -> None:
    """On a terminal `corral top` reads keys: q ends it (exit 0) and the
    terminal is given back as it was."""
    import pty
    import select
    import termios

    main, child = pty.openpty()
    before = termios.tcgetattr(child)
    proc = subprocess.Popen(
        [*corral_command(), "top", "--interval", "0.5"],
        env=local,
        stdin=child,
        stdout=child,
        stderr=child,
    )
    try:
        seen = b""
        deadline = time.monotonic() + 30
        while b"tasks of" not in seen:
            assert proc.poll() is None, seen.decode(errors="replace")
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([main], [], [], 0.2)[0]:
                seen += os.read(main, 65536)
        os.write(main, b"q")
        proc.wait(timeout=10)
        assert proc.returncode == 0
        assert termios.tcgetattr(child) == before  # cbreak undone
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
        os.close(child)


def test_exec_runs_a_command_in_a_running_task(local: dict[str, str]) -> None:
    """`corral exec` streams the command's output from inside the task and
    exits with its code; a task that is not there is named."""
    proc = subprocess.Popen(
        [*corral_command(), "run", "--name", "box", "--", "echo inside > marker; sleep 300"],
        env=local,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        task_id = ""
        while not task_id:
            assert time.monotonic() < deadline, "the task never showed up in `corral tasks`"
            listing = corral(local, "tasks").stdout
            task_id = next((w for w in listing.split() if w.startswith("box-") and "RUNNING" in listing), "")
            time.sleep(0.2)
        res = corral(local, "exec", task_id, "--", "sh", "-c", "cat marker; echo oops >&2; exit 5")
        assert res.returncode == 5, res.stderr
        assert res.stdout.splitlines() == ["inside", "oops"]
        timed = corral(local, "exec", "--timeout", "0.5", task_id, "--", "sleep", "30")
        assert timed.returncode == 124
        piped = subprocess.run(
            [*corral_command(), "exec", "-i", task_id, "--", "wc", "-l"],
            env=local,
            input="a\nb\nc\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (piped.returncode, piped.stdout.strip()) == (0, "3"), piped.stderr
        assert _exec_on_a_terminal(local, task_id) == 9
        prefix = corral(local, "exec", task_id[:6], "--", "echo", "by prefix")
        assert (prefix.returncode, prefix.stdout) == (0, "by prefix\n"), prefix.stderr
        missing = corral(local, "exec", "no-such-task", "--", "true")
        assert missing.returncode == 4, missing.stderr
        assert "no-such-task" in missing.stderr
        assert corral(local, "kill", task_id).returncode == 0
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_submit_wait_detaches_on_ctrl_c_and_job_follow_reattaches(
    local: dict[str, str], tmp_path: Path
) -> None:
    """Ctrl-C on `submit --wait` leaves the job running and says how to
    follow it; `corral job ID --follow` prints its task changes until it
    ends and exits with the job's outcome."""
    spec = tmp_path / "slow.toml"
    spec.write_text(
        'name = "slow"\n[[tasks]]\nname = "s"\ncount = 2\ncpus = 0.1\nmem = 32\n'
        'command = "sleep 3; test $CORRAL_TASK_INDEX -eq 0"\n'
    )
    proc = subprocess.Popen(
        [*corral_command(), "submit", str(spec), "--wait"],
        env=local,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "submitted job ID"
        assert first.startswith("submitted job "), first
        job_id = first.split()[2]
        deadline = time.monotonic() + 30
        while "RUNNING" not in proc.stdout.readline():
            assert time.monotonic() < deadline
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert f"detached: job {job_id} keeps running" in err
    assert f"`corral job {job_id} --follow`" in err
    assert "Traceback" not in err

    followed = corral(local, "job", job_id, "--follow")
    assert followed.returncode == 1, followed.stdout + followed.stderr  # s[1] exits 1
    assert "s[0] FINISHED" in followed.stdout
    assert "s[1] FAILED" in followed.stdout
    assert f"job {job_id} failed" in followed.stdout
    # Each task ran once: detaching did not cancel or restart anything.
    assert "attempt 2" not in followed.stdout


def test_service_deploy_wait_exits_0_when_healthy_and_1_when_rolled_back(
    local: dict[str, str], tmp_path: Path
) -> None:
    base = 'name = "waiter"\ninstances = 1\ncpus = 0.1\nmem = 32\n[update]\nrollback_after_failures = 1\n'
    good = tmp_path / "good.toml"
    good.write_text(base.replace("[update]", 'command = "sleep 600"\n[update]'))
    try:
        res = corral(local, "service", "deploy", str(good), "--wait", "--timeout", "60", timeout=90)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "service waiter: v1 is healthy: 1/1 instances" in res.stdout

        bad = tmp_path / "bad.toml"
        # v2 runs but never passes its health check: killed, counted as a
        # failure of the deployment, rolled back to v1 after one.
        bad.write_text(
            base.replace("[update]", 'command = "sleep 601"\n[update]')
            + '[health_check]\ntype = "command"\ncommand = "false"\ninterval_s = 0.5\n'
            "consecutive_failures = 1\n"
        )
        res = corral(local, "service", "deploy", str(bad), "--wait", "--timeout", "60", timeout=90)
        assert res.returncode == 1, res.stdout + res.stderr
        assert "service waiter: v2 failed and was rolled back" in res.stderr
        status = corral(local, "service", "status", "waiter")
        assert "RUNNING v1" in status.stdout, status.stdout
    finally:
        corral(local, "service", "rm", "waiter")


def _exec_on_a_terminal(env: dict[str, str], task_id: str) -> int:
    """`corral exec -it TASK -- sh` on a pty: what is typed reaches the shell,
    its answers come back, and the exit code is the shell's."""
    import pty
    import select
    import termios

    main, child = pty.openpty()
    before = termios.tcgetattr(child)
    proc = subprocess.Popen(
        [*corral_command(), "exec", "-it", task_id, "--", "sh"],
        env=env,
        stdin=child,
        stdout=child,
        stderr=child,
    )
    try:
        seen = b""
        deadline = time.monotonic() + 30
        typed = False
        while proc.poll() is None:
            if not typed and (b"# " in seen or b"$ " in seen):
                os.write(
                    main, b"echo $((6*7)); exit 9\n"
                )  # at the prompt: a shell may flush input typed earlier
                typed = True
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([main], [], [], 0.2)[0]:
                seen += os.read(main, 65536)
        assert b"42" in seen, seen.decode(errors="replace")
        assert termios.tcgetattr(child) == before  # raw mode undone
        return proc.returncode
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
        os.close(child)
