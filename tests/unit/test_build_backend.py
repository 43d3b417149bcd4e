"""tools/build_backend.py: an editable install of corral that mypy can follow.

A framework author's package, type-checked with ``mypy --strict`` against the
venv's editable install, must see corral's real types (issue 22: setuptools'
import-hook finder left every ``corral.*`` import unresolved).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import subprocess
import sys
import textwrap
import tomllib
import types
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _backend() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("corral_build_backend", REPO / "tools" / "build_backend.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pyproject_uses_the_in_tree_backend() -> None:
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]
    assert build["build-backend"] == "build_backend"
    assert build["backend-path"] == ["tools"]
    # An sdist must carry the backend, or a wheel cannot be built from it.
    assert "include tools/build_backend.py" in (REPO / "MANIFEST.in").read_text()


def test_the_link_tree_maps_what_package_dir_maps() -> None:
    mapping = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    expected = {pkg.removeprefix("corral."): folder for pkg, folder in mapping.items() if pkg != "corral"}
    assert mapping["corral"] == "corral"
    assert {name: name for name in _backend().MAPPED} == expected


def test_link_tree_lays_out_the_installed_package(tmp_path: Path) -> None:
    backend = _backend()
    tree = backend.link_tree(REPO, tmp_path / "tree")
    package = tree / "corral"
    assert (package / "resources.py").resolve() == REPO / "corral" / "resources.py"
    assert (package / "frameworks" / "driver.py").resolve() == REPO / "frameworks" / "driver.py"
    assert (package / "master" / "allocator").resolve() == REPO / "master" / "allocator"
    assert (package / "proto" / "py.typed").exists()
    assert not (package / "__pycache__").exists()
    # Rebuilt from scratch: a stale link from an earlier layout does not survive.
    (package / "gone.py").symlink_to(tmp_path / "nowhere.py")
    backend.link_tree(REPO, tree)
    assert not (package / "gone.py").is_symlink()


def test_add_pth_records_the_file(tmp_path: Path) -> None:
    backend = _backend()
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("demo-1.0.dist-info/RECORD", "demo-1.0.dist-info/RECORD,,\n")
    backend.add_pth(wheel, "/some/tree")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read(backend.PTH_NAME) == b"/some/tree\n"
        record = zf.read("demo-1.0.dist-info/RECORD").decode().splitlines()
    # The wheel spec: urlsafe base64 of the sha256, without padding, then the size.
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"/some/tree\n").digest()).rstrip(b"=").decode()
    assert f"{backend.PTH_NAME},sha256={digest},11" in record


def _editable() -> bool:
    try:
        dist = metadata.distribution("corral")
    except metadata.PackageNotFoundError:
        return False
    text = dist.read_text("direct_url.json")
    return bool(text and json.loads(text).get("dir_info", {}).get("editable"))


USER_PACKAGE = """
from corral.frameworks import Scheduler, SchedulerDriver, Task, TaskStatus
from corral.frameworks.types import Offer
from corral.resources import Resources


class Sweep(Scheduler):
    async def offers(self, driver: SchedulerDriver, offers: list[Offer]) -> None:
        for offer in offers:
            driver.launch(offer, [Task("p-1", "echo 1", Resources.of(cpus=0.1, mem=32))])

    async def status_update(self, driver: SchedulerDriver, status: TaskStatus) -> None:
        if status.state.is_terminal:
            driver.stop()
"""

# A type error that only a mypy that resolved corral's types can see.
WRONG = """
from corral.resources import Resources

cpus: str = Resources.of(cpus=1)
"""


@pytest.mark.slow
@pytest.mark.skipif(not _editable(), reason="corral is not an editable install here (make .venv/bin/corral)")
def test_mypy_strict_on_a_users_package_against_the_editable_install(tmp_path: Path) -> None:
    pkg = tmp_path / "sweep"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent(USER_PACKAGE))
    (pkg / "py.typed").write_text("")

    def mypy(*args: str) -> subprocess.CompletedProcess[str]:
        # cwd is the user's folder, not the repo: corral must come from the install.
        cmd = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), *args]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    ok = mypy("-p", "sweep")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Success" in ok.stdout

    (pkg / "wrong.py").write_text(textwrap.dedent(WRONG))
    bad = mypy("-p", "sweep")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert 'expression has type "Resources", variable has type "str"' in bad.stdout, bad.stdout
    assert "import-not-found" not in bad.stdout, bad.stdout
