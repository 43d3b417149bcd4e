"""How clients find a master (corral/cli/discovery.py): through the record a
running batch or service framework writes, as `corral submit` finds it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.cli.discovery import ClusterNotFoundError, framework_master, resolve_master


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_clients_find_the_master_of_a_running_batch_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path))
    monkeypatch.delenv("CORRAL_MASTER", raising=False)
    assert framework_master() is None
    with pytest.raises(ClusterNotFoundError):
        resolve_master(None)

    record = tmp_path / "batch.json"
    record.write_text(json.dumps({"address": "127.0.0.1:1", "master": "10.0.0.5:5050", "pid": _dead_pid()}))
    with pytest.raises(ClusterNotFoundError):  # its process is gone: not a cluster to use
        resolve_master(None)

    record.write_text(json.dumps({"address": "127.0.0.1:1", "master": "10.0.0.5:5050", "pid": os.getpid()}))
    assert resolve_master(None) == "10.0.0.5:5050"
    assert resolve_master("h:1") == "h:1"  # a flag still wins

    record.unlink()
    (tmp_path / "service.json").write_text(json.dumps({"master": "zk://h:2181/c", "pid": os.getpid()}))
    assert resolve_master(None) == "zk://h:2181/c"
