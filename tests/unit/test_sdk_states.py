"""The SDK's words for a status update: TaskState, Reason, Source (frameworks/states.py).

Each value is documented, in the same words as docs/frameworks.md's tables;
every reason the protocol has is an SDK value; values from a newer master
still decode.
"""

from __future__ import annotations

import doctest
import enum
import re
from pathlib import Path

import pytest

from corral.frameworks import Reason, Source, TaskState, TaskStatus
from corral.frameworks import states as states_module
from corral.proto import messages_pb2 as pb

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "frameworks.md"

# Mesos' terminal states; UNREACHABLE and UNKNOWN are not (the task may still run).
TERMINAL = {"FINISHED", "FAILED", "KILLED", "ERROR", "LOST", "DROPPED", "GONE", "GONE_BY_OPERATOR"}


@pytest.mark.parametrize("state", list(TaskState), ids=lambda s: s.name)
def test_is_terminal_per_state(state: TaskState) -> None:
    assert state.is_terminal is (state.name in TERMINAL)
    doc = state.__doc__ or ""
    # The docstring says it, in the same words each time.
    assert ("Not terminal" in doc) is not state.is_terminal, doc
    assert ("Terminal" in doc) is state.is_terminal, doc


def test_unreachable_and_unknown_are_not_terminal() -> None:
    assert not TaskState.UNREACHABLE.is_terminal
    assert not TaskState.UNKNOWN.is_terminal


@pytest.mark.parametrize("cls", [TaskState, Reason, Source], ids=lambda c: c.__name__)
def test_every_value_has_its_own_docstring(cls: type[enum.Enum]) -> None:
    for member in cls:
        # Without one of its own, a member's __doc__ would be its class's.
        assert member.__doc__, member
        assert member.__doc__ != cls.__doc__, member


def test_every_protocol_reason_and_source_is_an_sdk_value() -> None:
    for name, number in pb.TaskStatus.Reason.items():
        reason = Reason.from_proto(number)
        assert reason is not Reason.UNRECOGNIZED, name
        assert reason == ("" if number == 0 else name.removeprefix("REASON_"))
    for name, number in pb.TaskStatus.Source.items():
        source = Source.from_proto(number)
        assert source == ("" if number == 0 else name.removeprefix("SOURCE_"))
    protocol = {n.removeprefix("REASON_") for n, _ in pb.TaskStatus.Reason.items()}
    assert {r.name for r in Reason} - protocol == {"UNRECOGNIZED"}


def test_values_from_a_newer_master_still_decode() -> None:
    wire = pb.TaskStatus(task_id="t1", state=999, reason=999, source=77, message="from the future")  # type: ignore[arg-type]
    status = TaskStatus.from_proto(wire)
    assert status.state is TaskState.UNKNOWN
    assert status.reason is Reason.UNRECOGNIZED
    assert status.source is Source.UNSPECIFIED
    assert status.message == "from the future"


def test_a_status_without_a_reason_has_a_falsy_one() -> None:
    status = TaskStatus.from_proto(pb.TaskStatus(task_id="t1", state=pb.TASK_RUNNING))
    assert status.reason is Reason.UNSPECIFIED
    assert not status.reason
    assert f"{Reason.TASK_UNHEALTHY}" == "TASK_UNHEALTHY"
    assert Reason("AGENT_RESTARTED") is Reason.AGENT_RESTARTED


def _table(header: str) -> dict[str, list[str]]:
    """docs/frameworks.md's table whose header row starts with ``| header |``: name -> other cells."""
    text = GUIDE.read_text()
    start = text.index(f"| {header} |")
    rows: dict[str, list[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        name = re.fullmatch(r"`(\w+)`", cells[0])
        assert name, line
        rows[name.group(1)] = cells[1:]
    return rows


def _doc(member: enum.Enum) -> str:
    return (member.__doc__ or "").replace("``", "`")


def test_the_guide_tables_say_what_the_docstrings_say() -> None:
    states = _table("state")
    assert list(states) == [s.name for s in TaskState]
    for state in TaskState:
        assert states[state.name] == ["yes" if state.is_terminal else "no", _doc(state)], state
    reasons = _table("reason")
    assert list(reasons) == [r.name for r in Reason]
    for reason in Reason:
        assert reasons[reason.name] == [_doc(reason)], reason
    sources = _table("source")
    assert list(sources) == [s.name for s in Source]
    for source in Source:
        assert sources[source.name] == [_doc(source)], source


def test_docs_spell_reasons_one_way() -> None:
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        # Mesos' prefixed spelling (REASON_AGENT_RESTARTED) is the protocol's, not the docs'.
        found = re.findall(r"REASON_[A-Z]\w*", path.read_text())
        assert not found, f"{path.name}: {found}"


def test_the_module_examples_run() -> None:
    result = doctest.testmod(states_module)
    assert result.attempted >= 3
    assert result.failed == 0
