"""Framework plugins are found through entry points, also from a package
installed from outside the repo (examples/plugin-hello)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.cli.local import LocalCluster
from corral.frameworks.plugins import PluginError, as_plugin, discover, find
from corral.frameworks.scheduler import Scheduler
from corral.testing import corral_command

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plugin-hello"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/plugin-hello pip-installed into a directory of its own, as a user would install it."""
    pytest.importorskip("setuptools", reason="building the example offline needs setuptools in the venv")
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(EXAMPLE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return target


def env_with(path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(path), "CORRAL_LOG_LEVEL": "warning"}


def test_the_bundled_batch_framework_is_a_plugin() -> None:
    assert "batch" in [p.name for p in discover()]
    assert find("batch").load().name == "batch"
    with pytest.raises(PluginError, match=r"no framework plugin named 'nope' \(installed: .*batch"):
        find("nope")
    with pytest.raises(PluginError, match="must name a FrameworkPlugin or a Scheduler subclass"):
        as_plugin("x", 42)
    assert as_plugin("s", Scheduler).description.startswith("Callbacks of a framework scheduler")


def test_framework_list_shows_an_installed_third_party_plugin(plugin_path: Path) -> None:
    res = subprocess.run(
        [*corral_command(), "framework", "list"],
        env=env_with(plugin_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert "hello" in res.stdout
    assert "corral-hello" in res.stdout
    assert "corral_hello:Hello" in res.stdout
    assert "batch" in res.stdout
    assert res.stdout.startswith("name\tpackage\ttarget\tdescription\n")  # piped: tab-separated
    listed = subprocess.run(
        [*corral_command(), "framework", "list", "-o", "json"],
        env=env_with(plugin_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    hello = next(p for p in json.loads(listed.stdout) if p["name"] == "hello")
    assert (hello["package"], hello["target"]) == ("corral-hello", "corral_hello:Hello")


@pytest.mark.root
async def test_framework_run_runs_the_plugin(
    cluster: LocalCluster, plugin_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "hello.toml"
    config.write_text('[framework]\nname = "hello-test"\n[scheduler]\ncount = 3\ncommand = "echo hi"\n')
    proc = await asyncio.create_subprocess_exec(
        *corral_command(),
        "framework",
        "run",
        "hello",
        "--master",
        cluster.master_address,
        "--config",
        str(config),
        env=env_with(plugin_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert sorted(out.decode().split("\n"))[1:] == [f"hello-{i} FINISHED" for i in range(3)]

    # The scheduler's driver.stop(exit_code=...) is the command's exit status.
    failing = tmp_path / "failing.toml"
    failing.write_text('[framework]\nname = "hello-fails"\n[scheduler]\ncount = 1\ncommand = "exit 3"\n')
    proc = await asyncio.create_subprocess_exec(
        *corral_command(),
        "framework",
        "run",
        "hello",
        "--master",
        cluster.master_address,
        "--config",
        str(failing),
        env=env_with(plugin_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1, err.decode()
    assert out.decode().split() == ["hello-0", "FAILED"]

    bad = tmp_path / "bad.toml"
    bad.write_text("[scheduler]\ncolour = 1\n")
    res = await asyncio.create_subprocess_exec(
        *corral_command(),
        "framework",
        "run",
        "hello",
        "--master",
        cluster.master_address,
        "--config",
        str(bad),
        env=env_with(plugin_path),
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(res.communicate(), 60)
    assert res.returncode != 0
    assert "config.scheduler: Hello does not take these settings" in err.decode()
    assert "colour" in err.decode()


def test_framework_run_gives_up_on_an_unreachable_master_with_exit_3(
    plugin_path: Path, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"  # closed once the block ends: nothing listens
    config = tmp_path / "hello.toml"
    config.write_text("[framework]\nconnect_timeout_s = 1\n")
    started = time.monotonic()
    res = subprocess.run(
        [*corral_command(), "framework", "run", "hello", "--master", address, "--config", str(config)],
        env=env_with(plugin_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 3, res.stderr  # corral/cli/exit.py: cannot reach the cluster
    assert time.monotonic() - started < 30
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert errors[0].startswith(
        f"error: could not subscribe to the master at {address} within 1 s (last: UNAVAILABLE: "
    ), res.stderr
    assert res.stdout == ""


@pytest.mark.root
async def test_the_sync_adapter_runs_a_plain_def_scheduler(cluster: LocalCluster) -> None:
    from corral.frameworks import Offer, SchedulerDriver, Task, TaskStatus
    from corral.frameworks.sync import SyncScheduler, run
    from corral.resources import Resources

    class Hello(SyncScheduler):
        def __init__(self) -> None:
            self.launched = False
            self.ended: TaskStatus | None = None

        def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
            for offer in offers:
                if self.launched:
                    driver.decline(offer)
                else:
                    driver.launch(offer, [Task("hi", "exit 4", Resources.of(cpus=0.1, mem=32))])
                    self.launched = True

        def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
            if status.state.is_terminal:
                self.ended = status
                driver.stop()

    hello = Hello()
    # run() blocks (its own event loop), so it goes to a thread while this loop hosts the cluster.
    await asyncio.wait_for(
        asyncio.to_thread(run, hello, name="sync-hello", master=cluster.master_address), 30
    )
    assert hello.ended is not None
    assert hello.ended.exit_code == 4
