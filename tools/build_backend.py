"""The PEP 517 build backend: setuptools', with an editable wheel mypy can follow.

The top-level folders master/, slave/, frameworks/ and proto/ are sub-packages
of ``corral`` only through ``[tool.setuptools.package-dir]``. setuptools'
editable wheel serves such a mapping with an import hook (a meta-path finder
installed from a ``.pth``), which the interpreter follows and static tools such
as mypy cannot: ``mypy --strict`` on a framework author's package then reports
"cannot find implementation or library stub for module corral.frameworks".

So ``build_editable`` also lays out the installed shape on disk, as a tree of
symlinks under ``build/editable/``, and adds a plain path ``.pth`` for that
tree to the wheel. mypy reads path ``.pth`` lines (PEP 561 search), and so does
the interpreter, which then imports ``corral`` from the tree. setuptools' finder
stays as the fallback for what the tree cannot show until the next install: a
module added directly under ``corral/`` (sub-folders are linked whole, so new
files in them appear at once), or a deleted ``build/``.

Everything else (wheel, sdist, metadata) is setuptools' unchanged.
docs/architecture.md ("Layout and packaging") has the reasoning.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import zipfile
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (
    build_sdist,
    build_wheel,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    get_requires_for_build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

ROOT = Path(__file__).resolve().parents[1]
# The installed layout: corral/<name> for each folder mapped into the package
# (pyproject.toml's package-dir; tests/unit/test_build_backend.py keeps them equal).
MAPPED = ("master", "slave", "frameworks", "proto")
TREE = Path("build") / "editable"
PTH_NAME = "__editable__.corral.static.pth"


def link_tree(root: Path, tree: Path) -> Path:
    """Lay out ``tree/corral`` as installed, made of symlinks into ``root``; returns ``tree``.

    Each entry of ``root/corral`` is linked by itself (the mapped folders sit
    beside them), each mapped folder is linked whole. Rebuilt from scratch, so
    a deleted source file leaves no dangling link behind.
    """
    if tree.exists() or tree.is_symlink():
        shutil.rmtree(tree)
    package = tree / "corral"
    package.mkdir(parents=True)
    for entry in sorted((root / "corral").iterdir()):
        if entry.name == "__pycache__" or entry.name in MAPPED:
            continue
        (package / entry.name).symlink_to(entry)
    for name in MAPPED:
        (package / name).symlink_to(root / name, target_is_directory=True)
    return tree


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def add_pth(wheel: Path, line: str) -> None:
    """Add ``PTH_NAME`` holding ``line`` to ``wheel``, and to its RECORD (the wheel spec's hashes)."""
    data = (line + "\n").encode()
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                text = body.decode()
                if not text.endswith("\n"):
                    text += "\n"
                body = (text + _record_line(PTH_NAME, data) + "\n").encode()
            dst.writestr(info, body)
        dst.writestr(PTH_NAME, data)
    os.replace(tmp, wheel)


def build_editable(
    wheel_directory: str,
    config_settings: dict[str, str | list[str]] | None = None,
    metadata_directory: str | None = None,
) -> str:
    """setuptools' editable wheel plus a path ``.pth`` to a symlink tree mypy can follow."""
    name: str = _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
    tree = link_tree(ROOT, ROOT / TREE)
    add_pth(Path(wheel_directory) / name, str(tree))
    return name
