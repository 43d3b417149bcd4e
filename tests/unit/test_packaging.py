"""The wheel holds every sub-package under ``corral/``.

pyproject.toml lists packages explicitly and maps master/, slave/, frameworks/
and proto/ into corral.*; an unlisted sub-package still imports in the editable
install but would be missing from the wheel. Building needs only setuptools
(already in the venv), so this runs offline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAPPED = {
    "corral": "corral",
    "master": "corral/master",
    "slave": "corral/slave",
    "frameworks": "corral/frameworks",
    "proto": "corral/proto",
}
IGNORED = (".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in the venv")
    # Build from a copy: setuptools writes build/ and *.egg-info into the source
    # tree, and a stale build/lib could hide a missing package.
    src = tmp_path_factory.mktemp("src") / "corral"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*IGNORED))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    (path,) = out.glob("corral-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def _names(wheel: zipfile.ZipFile) -> set[str]:
    return set(wheel.namelist())


@pytest.mark.slow
def test_every_package_directory_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = _names(wheel)
    expected = []
    for top, target in MAPPED.items():
        for init in sorted((REPO / top).rglob("__init__.py")):
            rel = init.parent.relative_to(REPO / top).as_posix()
            expected.append(f"{target}/{rel}/__init__.py".replace("/./", "/"))
    assert len(expected) >= 11
    missing = [e for e in expected if e not in names]
    assert not missing, f"sub-packages missing from the wheel (list them in pyproject.toml): {missing}"


@pytest.mark.slow
def test_every_module_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    names = _names(wheel)
    missing = []
    for top, target in MAPPED.items():
        for module in (REPO / top).rglob("*.py"):
            if not (module.parent / "__init__.py").exists():
                continue
            rel = module.relative_to(REPO / top).as_posix()
            if f"{target}/{rel}" not in names:
                missing.append(f"{target}/{rel}")
    assert not missing, missing


@pytest.mark.slow
def test_no_unmapped_top_level_folders(wheel: zipfile.ZipFile) -> None:
    tops = {n.split("/")[0] for n in _names(wheel)}
    assert not tops & {"master", "slave", "proto", "frameworks", "tests", "bench"}, tops
    assert "corral" in tops


@pytest.mark.slow
def test_generated_protobuf_code_is_included(wheel: zipfile.ZipFile) -> None:
    names = _names(wheel)
    generated = sorted(p.name for p in (REPO / "proto").glob("*_pb2*.py*"))
    assert generated
    missing = [g for g in generated if f"corral/proto/{g}" not in names]
    assert not missing, missing
    assert "corral/proto/py.typed" in names
    assert "corral/py.typed" in names


@pytest.mark.slow
def test_console_entry_point(wheel: zipfile.ZipFile) -> None:
    (entry_points,) = [n for n in _names(wheel) if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "[console_scripts]" in text
    assert "corral = corral.cli.main:main" in text
