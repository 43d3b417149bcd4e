"""The committed protobuf code in proto/ is exactly what proto/generate.py makes.

Generated code is never edited by hand (CONVENTIONS.md); this catches a .proto
change committed without regenerating, or a hand edit of a *_pb2 file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

PROTO_DIR = Path(__file__).resolve().parents[2] / "proto"


def _load_generate_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corral_proto_generate", PROTO_DIR / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_committed(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) is not installed")
    made = _load_generate_module().generate(tmp_path)
    names = sorted(p.name for p in made)
    assert names, "generate() produced nothing"
    expected = sorted(
        p.name for pattern in ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py") for p in PROTO_DIR.glob(pattern)
    )
    assert names == expected, "generated and committed file sets differ"
    stale = [n for n in names if (tmp_path / n).read_bytes() != (PROTO_DIR / n).read_bytes()]
    assert not stale, f"run `python proto/generate.py`: committed files differ from generated: {stale}"
