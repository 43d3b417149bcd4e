"""The ``corral`` script ends without the interpreter's teardown only when the
command said it leaves nothing behind (corral.cli.common.nothing_to_tear_down),
with the same output and exit status; otherwise it exits as Python does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# The script's main(), after a command that may ask for the quick exit; an
# atexit handler leaves a marker when Python's own exit path runs.
PROBE = """
import atexit, sys, threading
marker, quick, thread = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
atexit.register(lambda: open(marker, "w").close())
from corral.cli import common, main
if quick:
    common.nothing_to_tear_down()
if thread:
    threading.Thread(target=threading.Event().wait, args=(0.2,)).start()
if sys.argv[5] == "1":  # as coverage does; it writes its data at exit
    sys.settrace(lambda *args: None)
sys.argv = ["corral", sys.argv[4]]
print("before", flush=False)
main.main()
"""


def _run(
    tmp_path: Path, quick: bool, thread: bool, argv: str = "--version", trace: bool = False
) -> tuple[subprocess.CompletedProcess[str], bool]:
    marker = tmp_path / "atexit-ran"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            str(marker),
            "1" if quick else "0",
            "1" if thread else "0",
            argv,
            "1" if trace else "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, marker.exists()


@pytest.mark.parametrize(
    ("quick", "thread", "teardown"),
    [(False, False, True), (True, False, False), (True, True, True)],
    ids=["not-asked", "asked", "asked-but-a-thread-runs"],
)
def test_the_exit_path(tmp_path: Path, quick: bool, thread: bool, teardown: bool) -> None:
    done, atexit_ran = _run(tmp_path, quick, thread)
    assert done.returncode == 0, done.stderr
    # Buffered output is flushed either way.
    assert done.stdout.splitlines() == ["before", "corral, version 0.1.0"]
    assert atexit_ran is teardown


def test_a_failing_command_keeps_its_status_and_message(tmp_path: Path) -> None:
    done, atexit_ran = _run(tmp_path, quick=True, thread=False, argv="nosuch")
    assert done.returncode == 2
    assert "No such command 'nosuch'" in done.stderr
    assert not atexit_ran


def test_a_tracer_gets_the_usual_exit(tmp_path: Path) -> None:
    done, atexit_ran = _run(tmp_path, quick=True, thread=False, trace=True)
    assert done.returncode == 0, done.stderr
    assert atexit_ran
