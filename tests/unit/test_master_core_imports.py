"""The master core stays pure, and master modules import each other without cycles.

Three checks, each shown to be able to fail on a planted example:
* no module of ``master/core/`` imports asyncio, grpc, kazoo, time (or any
  other clock, socket, thread or log sink), protobuf (``google.protobuf``,
  the generated ``corral.proto`` modules, the ``corral.codec`` conversions)
  or a module of the runtime or the edge (``master/wire.py``, ``validation.py``);
* importing the core, transitively, loads none of asyncio, grpc, kazoo,
  structlog, socket or protobuf (checked in a fresh interpreter);
* the graph of imports between ``corral.master`` modules (TYPE_CHECKING
  imports included: a cycle there is still a back-reference) has no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import corral.master as master_pkg

MASTER = Path(master_pkg.__file__).parent
CORE = MASTER / "core"
FORBIDDEN = {
    "asyncio",
    "grpc",
    "kazoo",
    "time",
    "socket",
    "subprocess",
    "threading",
    "random",
    "uuid",
    "structlog",
    "datetime",
    "google",  # google.protobuf: the core's records are dataclasses (master/wire.py converts)
}
#: protobuf under corral's name: the generated messages and their conversions
PROTOBUF = {"corral.proto", "corral.codec"}
#: runtime modules of the master the core must not reach back into
RUNTIME = {
    "corral.master.master",
    "corral.master.server",
    "corral.master.services",
    "corral.master.registry",
    "corral.master.election",
    "corral.master.leadership",
    "corral.master.streams",
    "corral.master.agent_queries",
    "corral.master.audit",
    "corral.master.authz",
    "corral.master.metrics",
    # the edge: protobuf to and from the core's values
    "corral.master.wire",
    "corral.master.validation",
    "corral.master.call_validation",
}


def _imports(source: str, package: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``source``, relative ones resolved."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, n.name) for n in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.append((node.lineno, base))
            # ``from corral.master import master`` names a module too
            out += [(node.lineno, f"{base}.{n.name}") for n in node.names]
    return out


def impurities(source: str, name: str = "corral.master.core.x") -> list[str]:
    """Why a core module's source is not pure (empty: it is)."""
    package = name.rsplit(".", 1)[0]
    bad = []
    for line, module in _imports(source, package):
        top = module.split(".")[0]
        if top in FORBIDDEN or any(module == r or module.startswith(r + ".") for r in RUNTIME | PROTOBUF):
            bad.append(f"{name}:{line} imports {module}")
    return sorted(set(bad))


def _module_name(path: Path) -> str:
    rel = path.relative_to(MASTER).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["corral.master", *parts])


def import_graph(root: Path = MASTER) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = {m for _, m in _imports(path.read_text(), package) if m in modules and m != name}
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (as a path that returns to its start), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return []


def test_the_purity_check_can_fail() -> None:
    assert impurities("import asyncio\n") == ["corral.master.core.x:1 imports asyncio"]
    assert impurities("from time import monotonic\n")
    assert impurities("from corral.master.master import Master\n")
    assert impurities("if TYPE_CHECKING:\n    from corral.master.master import Master\n")
    assert impurities("from .. import registry\n")
    assert impurities("from corral.proto import messages_pb2 as pb\n")
    assert impurities("import corral.proto.scheduler_pb2\n")
    assert impurities("from google.protobuf import message\n")
    assert impurities("from corral.codec import resources_from_proto\n")
    assert impurities("from corral.master import wire\n")
    assert impurities("from corral.master.validation import validate_task\n")
    assert not impurities("from corral.master.core.records import AgentRecord\n")


def test_master_core_imports_no_io_clock_or_runtime() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 10
    offenders = [bad for path in files for bad in impurities(path.read_text(), _module_name(path))]
    assert not offenders, f"the master core must stay pure: {offenders}"


def test_importing_the_core_loads_no_io_library() -> None:
    probe = (
        "import sys; import corral.master.core.master_core; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'asyncio', 'grpc', 'kazoo', 'structlog', 'socket', 'google'})), "
        "' '.join(sorted(m for m in sys.modules if m.startswith(('corral.proto', 'corral.codec')))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [], f"importing the core loaded: {out.stdout}"


def test_the_cycle_check_can_fail() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_master_modules() -> None:
    graph = import_graph()
    assert "corral.master.core.master_core" in graph
    assert find_cycle(graph) == []
