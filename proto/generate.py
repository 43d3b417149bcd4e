"""Regenerate the protobuf and gRPC code in proto/ from the *.proto sources.

Run from anywhere: ``python proto/generate.py``. tests/unit/test_proto_generated.py
runs it into a scratch folder and fails if the committed files differ.
The virtual include path ``corral/proto=proto`` makes the generated modules import
each other as ``corral.proto.x_pb2`` (FACTS.md: a plain ``-Iproto`` breaks imports).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent


def generate(out_dir: Path) -> list[Path]:
    """Generate into out_dir; return the generated files."""
    from grpc_tools import protoc  # dev dependency, pinned in pyproject.toml

    sources = sorted(PROTO_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        args = [
            "protoc",
            f"-Icorral/proto={PROTO_DIR}",
            f"--python_out={scratch}",
            f"--pyi_out={scratch}",
            f"--grpc_python_out={scratch}",
            *[f"{PROTO_DIR}/{p.name}" for p in sources],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        made = []
        for f in sorted((Path(scratch) / "corral" / "proto").iterdir()):
            target = out_dir / f.name
            shutil.copyfile(f, target)
            made.append(target)
        return made


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else PROTO_DIR
    for path in generate(out):
        sys.stdout.write(f"wrote {path}\n")
