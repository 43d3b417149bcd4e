"""The agent's pure modules stay pure, and slave/ has no import cycle.

Imports are read from the source (ast), as tests/unit/test_allocator.py does
for the allocator, and followed through corral's own modules, so a clock or
an event loop pulled in by a helper counts too. The containerizer
(slave/containerizer/, its own package with its own seam) and the generated
protobuf code are not followed: the core uses their value types only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import corral
import corral.slave

FORBIDDEN = {"grpc", "asyncio", "socket", "subprocess", "time", "kazoo", "threading", "random"}
PURE = [
    "corral.slave.agent_core",
    "corral.slave.agent_effects",
    "corral.slave.task_config",
    "corral.slave.task_status",
    "corral.slave.session",
]
#: the runtime's modules, which the pure ones must never import
SHELL = {"corral.slave.agent", "corral.slave.task_runner", "corral.slave.master_link"}
NOT_FOLLOWED = ("corral.slave.containerizer", "corral.proto")

ROOTS = {"corral.slave": Path(corral.slave.__file__).parent, "corral": Path(corral.__file__).parent}


def _path(module: str) -> Path | None:
    for prefix in ("corral.slave", "corral"):
        if module == prefix or module.startswith(prefix + "."):
            rest = module[len(prefix) :].lstrip(".").split(".") if module != prefix else []
            base = ROOTS[prefix].joinpath(*rest)
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
            return None
    return None


def _imports(path: Path, *, runtime_only: bool) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``; with ``runtime_only``
    leave out those under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, n.name) for n in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from corral.slave import gc` imports the module corral.slave.gc
            found += [(node.lineno, f"{node.module}.{n.name}") for n in node.names]
    return found


def _followed(module: str) -> bool:
    return _path(module) is not None and not module.startswith(NOT_FOLLOWED)


def offenders(start: str) -> list[str]:
    """Forbidden or shell imports reachable from ``start`` through corral's modules."""
    seen, todo, bad = set(), [start], []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = _path(module)
        assert path is not None, module
        for line, name in _imports(path, runtime_only=False):
            where = f"{module}:{line} imports {name}"
            if name.split(".")[0] in FORBIDDEN or name in SHELL:
                bad.append(where)
            elif _followed(name):
                todo.append(name)
    return bad


@pytest.mark.parametrize("module", PURE)
def test_the_agent_core_and_translations_import_no_io_clock_or_shell(module: str) -> None:
    assert not offenders(module), f"{module} must stay pure: {offenders(module)}"


def test_the_purity_check_fails_on_direct_and_indirect_imports() -> None:
    # The check itself must be able to fail: the runtime imports the clock and
    # the event loop directly; slave/metrics.py reaches asyncio only through
    # corral/metrics.py (its HTTP server).
    assert any("corral.slave.agent:" in o and "imports time" in o for o in offenders("corral.slave.agent"))
    indirect = offenders("corral.slave.metrics")
    assert indirect
    assert all(o.startswith("corral.metrics:") for o in indirect), indirect


def _slave_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(ROOTS["corral.slave"].glob("*.py")):
        module = f"corral.slave.{path.stem}" if path.stem != "__init__" else "corral.slave"
        deps = {
            name
            for _, name in _imports(path, runtime_only=True)
            if name.startswith("corral.slave.") and _followed(name) and _path(name) is not None
        }
        graph[module] = {d for d in deps if not d.startswith("corral.slave.containerizer")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_slave_modules_import_each_other_without_a_cycle() -> None:
    graph = _slave_graph()
    assert "corral.slave.agent_core" in graph["corral.slave.task_runner"]
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_the_cycle_check_finds_one() -> None:
    graph = {**_slave_graph(), "corral.slave.agent_core": {"corral.slave.agent"}}
    assert _cycle(graph) is not None


def test_recovery_gc_and_health_reach_into_no_private_of_the_agent() -> None:
    for name in ("recovery", "gc", "health", "metrics", "usage"):
        source = (ROOTS["corral.slave"] / f"{name}.py").read_text()
        assert "agent._" not in source, name
        assert "corral.slave.agent import" not in source, name
