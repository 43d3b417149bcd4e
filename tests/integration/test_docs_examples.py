"""The code in docs/frameworks.md runs, as written, against a real cluster."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root]
DOC = Path(__file__).resolve().parents[2] / "docs" / "frameworks.md"


def _examples() -> str:
    blocks = re.findall(r"```python\n# example: \w+\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 5, "docs/frameworks.md should hold five runnable examples"
    return "\n".join(blocks)


async def test_frameworks_guide_runs(tmp_path: Path) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_examples(), str(DOC), "exec"), namespace)
    test = namespace["test_countdown"]
    await test(tmp_path / "countdown")  # type: ignore[operator]
    plugin_test = namespace["test_plugin"]
    await plugin_test(tmp_path / "plugin")  # type: ignore[operator]
    failover_test = namespace["test_failover"]
    await failover_test(tmp_path / "failover")  # type: ignore[operator]
