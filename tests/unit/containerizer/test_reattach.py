"""Identifying a supervisor by pid and start time, so a recycled pid is never taken for it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from corral.slave.containerizer import reattach


def test_a_live_process_is_found_only_with_its_own_start_time() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        start = reattach.start_time(proc.pid)
        assert start is not None
        fd = reattach.open_process(proc.pid, start)
        assert fd is not None
        assert reattach.alive(fd)
        os.close(fd)
        # Same pid, another start time: a different process that got the pid.
        assert reattach.open_process(proc.pid, start + 1) is None
        assert reattach.open_process(proc.pid, None) is None
    finally:
        proc.kill()
        proc.wait()
    assert reattach.start_time(proc.pid) is None or reattach.open_process(proc.pid, start) is None


def test_start_time_survives_a_process_name_with_spaces_and_parens(tmp_path: Path) -> None:
    exe = tmp_path / "a b) c"
    exe.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(exe), "30"])
    try:
        # In clock ticks since boot: it started just now.
        ticks = os.sysconf("SC_CLK_TCK")
        now = float(Path("/proc/uptime").read_text().split()[0]) * ticks
        start = reattach.start_time(proc.pid)
        assert start is not None
        assert abs(now - start) < 10 * ticks
    finally:
        proc.kill()
        proc.wait()


def test_a_damaged_container_record_is_refused(tmp_path: Path) -> None:
    meta = tmp_path / "c1"
    meta.mkdir()
    assert reattach.read_record(meta) is None
    (meta / "container.json").write_text('{"container_id": "c1", "supervisor_')
    with pytest.raises(reattach.RecordError, match="not valid JSON"):
        reattach.read_record(meta)
    record = {"container_id": "c2", "supervisor_pid": 1, "sandbox": "/"}
    (meta / "container.json").write_text(json.dumps(record))
    with pytest.raises(reattach.RecordError, match="folder"):
        reattach.read_record(meta)
