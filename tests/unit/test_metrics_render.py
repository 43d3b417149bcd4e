"""The Prometheus text exposition: format, escaping, numbers."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from corral.metrics import Metric, render


def test_families_render_with_help_type_and_sorted_labels() -> None:
    text = render(
        [
            Metric("corral_x", "Things, by state.")
            .add(3, state="RUNNING", agent="a1")
            .add(0.5, state="LOST"),
            Metric("corral_y_total", "Done.", "counter").add(7),
        ]
    )
    assert text == (
        "# HELP corral_x Things, by state.\n"
        "# TYPE corral_x gauge\n"
        'corral_x{agent="a1",state="RUNNING"} 3\n'
        'corral_x{state="LOST"} 0.5\n'
        "# HELP corral_y_total Done.\n"
        "# TYPE corral_y_total counter\n"
        "corral_y_total 7\n"
    )


def test_special_numbers() -> None:
    text = render([Metric("m", "h").add(float("nan")).add(float("inf")).add(-float("inf")).add(1e20)])
    assert text.splitlines()[2:] == ["m NaN", "m +Inf", "m -Inf", "m 1e+20"]


_SAMPLE = re.compile(r'^m\{v="((?:[^"\\\n]|\\.)*)"\} 1$')


@given(st.text())
def test_any_label_value_stays_on_one_line_and_unescapes_to_itself(value: str) -> None:
    lines = render([Metric("m", "help\nwith a newline").add(1, v=value)]).rstrip("\n").split("\n")
    assert len(lines) == 3  # HELP, TYPE, the sample: nothing broke a line
    match = _SAMPLE.match(lines[2])
    assert match is not None, lines[2]
    unescaped = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), match.group(1))
    assert unescaped == value
