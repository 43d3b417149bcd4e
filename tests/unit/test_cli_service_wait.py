"""`corral service deploy --wait`'s verdict (corral/cli/service_wait.py), table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from corral.cli.service_wait import EXIT_DETACHED, outcome, wait


def _view(state: str, version: int, healthy: int = 2, stable: int = 1, failures: int = 0) -> dict[str, Any]:
    return {
        "state": state,
        "version": version,
        "stable_version": stable,
        "healthy": healthy,
        "instances": 2,
        "deploy_failures": failures,
        "message": "m",
    }


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (_view("RUNNING", 2), (True, "v2 is healthy: 2/2 instances")),
        (_view("DEPLOYING", 2, healthy=1), None),  # still rolling
        (_view("RUNNING", 2, healthy=1), None),  # scaled up, not all healthy yet
        (_view("ROLLING_BACK", 1), None),  # rolling back: not over yet
        (_view("RUNNING", 1), (False, "v2 failed and was rolled back")),
        (
            _view("DEPLOYING", 2, healthy=0, stable=0, failures=3),
            (False, "no stable version to roll back to"),
        ),
        (_view("DEPLOYING", 2, healthy=0, stable=0, failures=2), None),  # below the limit
        (_view("DELETING", 2), (False, "being removed")),
    ],
)
def test_outcome(view: dict[str, Any], expected: tuple[bool, str] | None) -> None:
    got = outcome(view, 2, 3)
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert got.ok is expected[0]
        assert expected[1] in got.message


def test_wait_times_out_with_1_and_ctrl_c_detaches(capsys: pytest.CaptureFixture[str]) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    assert wait(lambda: _view("DEPLOYING", 2, healthy=0), "web", 2, 3, 5.0, poll_s=0, clock=clock) == 1
    assert "v2 not healthy after 5s" in capsys.readouterr().err

    def interrupted() -> dict[str, Any]:
        raise KeyboardInterrupt

    assert wait(interrupted, "web", 2, 3, 5.0, poll_s=0) == EXIT_DETACHED
    assert "detached: the deployment of web v2 goes on" in capsys.readouterr().err


def test_a_healthy_glimpse_is_not_enough(capsys: pytest.CaptureFixture[str]) -> None:
    """A version that is healthy on one poll and failing on the next (no
    health check, crashing) is not called healthy; one that stays is."""
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    flapping = iter([_view("RUNNING", 2), _view("RUNNING", 2, healthy=0)] * 10)
    assert wait(lambda: next(flapping), "web", 2, 3, 30.0, poll_s=0, clock=clock, healthy_for_s=3.0) == 1
    assert "not healthy after 30s" in capsys.readouterr().err
    assert wait(lambda: _view("RUNNING", 2), "web", 2, 3, 30.0, poll_s=0, clock=clock, healthy_for_s=3.0) == 0
