"""The one renderer of the CLI's list and show commands (``-o FORMAT``).

A command builds its records once (plain dicts with snake_case keys, full
ids, numbers as numbers, resources in base units: the machine-readable shape
documented in docs/cli.md) and the columns that display them; this module
prints them as

- ``table``: a rich box table on a terminal; ``wide``: the same with the
  columns marked wide;
- ``tsv``: one header line, then one line per record, cells separated by a
  tab, never truncated or boxed. Not on a terminal (a pipe, a file) this is
  what ``table`` and ``wide`` print, so ``corral agents | cut -f2`` works,
  as ``ps`` and ``kubectl`` keep scripts working;
- ``json`` / ``yaml``: the records themselves (a list for list commands,
  an object for show commands).

The table and the machine shapes come from the same records, so an id shown
in one is the id in the other.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from rich.table import Table
from rich.text import Text

from corral.cli.common import console
from corral.resources import MILLI, Resources

F = TypeVar("F", bound=Callable[..., Any])
Record = Mapping[str, Any]
Cell = str | Text

FORMATS = ("table", "wide", "json", "yaml", "tsv")
MIB = 1 << 20


def output_option(fn: F) -> F:
    """``-o/--output FORMAT`` for a list or show command (its value: ``output``)."""
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice(FORMATS),
        default=None,
        metavar="|".join(FORMATS),
        help="table (default on a terminal), wide (more columns), json, yaml, "
        "or tsv (tab-separated, one header line: the default when not on a terminal).",
    )(fn)


@dataclass(frozen=True)
class Column:
    """One column: its header, how a record shows in it, and whether only
    ``-o wide`` shows it."""

    header: str
    cell: Callable[[Any], Cell]
    wide: bool = False
    right: bool = False
    fold: bool = False


@dataclass(frozen=True)
class Listing:
    """Records under columns, with a title and what to say when there are none
    (both only on a terminal)."""

    columns: Sequence[Column]
    rows: Sequence[Any]
    title: str = ""
    empty: str = ""


def key(name: str, fmt: Callable[[Any], str] = str) -> Callable[[Any], str]:
    """A cell that shows ``record[name]`` ("" for None)."""

    def cell(record: Any) -> str:
        value = record.get(name)
        return "" if value is None else fmt(value)

    return cell


def effective(fmt: str | None) -> str:
    """What ``-o fmt`` prints here: table and wide become tsv off a terminal."""
    if fmt is None:
        fmt = "table"
    if fmt in ("table", "wide") and not console.is_terminal:
        return "tsv-wide" if fmt == "wide" else "tsv"
    return fmt


def show(fmt: str | None, *listings: Listing, data: Any = None, text: Iterable[str] | None = None) -> None:
    """Print ``listings`` as ``fmt`` asks. ``data`` is the machine-readable
    answer (default: the first listing's records); ``text``, when given,
    is what a human reads instead of tables (``explain``)."""
    mode = effective(fmt)
    if mode in ("json", "yaml"):
        payload = to_plain(data if data is not None else (listings[0].rows if listings else []))
        if mode == "json":
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        else:
            import yaml  # only here: every listing command imports this module

            sys.stdout.write(yaml.safe_dump(payload, sort_keys=False, allow_unicode=True))
        return
    if text is not None:
        for line in text:
            console.print(line, highlight=False, markup=False)
        return
    wide = mode in ("wide", "tsv-wide")
    for i, listing in enumerate(listings):
        columns = [c for c in listing.columns if wide or not c.wide]
        if mode.startswith("tsv"):
            if i:
                sys.stdout.write("\n")
            sys.stdout.write(tsv(columns, listing.rows))
        else:
            console.print(box_table(listing, columns))
    sys.stdout.flush()


def tsv(columns: Sequence[Column], rows: Sequence[Any]) -> str:
    """A header line and a line per record; a tab or newline in a cell becomes a space."""
    lines = ["\t".join(_flat(c.header) for c in columns)]
    lines += ["\t".join(_flat(_plain(c.cell(r))) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


def box_table(listing: Listing, columns: Sequence[Column]) -> Table:
    table = Table(title=listing.title or None, title_justify="left")
    for c in columns:
        table.add_column(
            c.header, justify="right" if c.right else "left", overflow="fold" if c.fold else "ellipsis"
        )
    for r in listing.rows:
        table.add_row(*(c.cell(r) for c in columns))
    if not listing.rows and listing.empty:
        table.caption = listing.empty
    return table


def _plain(cell: Cell) -> str:
    return cell.plain if isinstance(cell, Text) else str(cell)


def _flat(text: str) -> str:
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def to_plain(value: Any) -> Any:
    """JSON- and YAML-safe data: tuples become lists, keys strings."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


# -- resources in base units ---------------------------------------------------


def resources_json(r: Resources) -> dict[str, Any]:
    """Resources as numbers in base units: ``cpus`` (a float), ``mem_bytes``
    and ``disk_bytes`` (always present, 0 when absent), other scalars under
    their names, ranges as ``[[begin, end], ...]``, sets as sorted lists, and
    ``reserved`` by role when some are reserved."""
    out: dict[str, Any] = {"cpus": r.scalar("cpus") / MILLI, "mem_bytes": 0, "disk_bytes": 0}
    for name in sorted({n for n, _ in r.scalars}):
        milli = r.scalar(name)
        if name in ("mem", "disk"):
            out[f"{name}_bytes"] = milli * MIB // MILLI
        elif name != "cpus":
            out[name] = milli / MILLI
    for name in sorted({n for n, _ in r.ranges}):
        out[name] = [list(i) for i in r.range(name).intervals]
    for (name, _role), values in sorted(r.sets.items()):
        out[name] = sorted(set(out.get(name, [])) | values)
    roles = sorted(role for role in r.roles() if role)
    if roles:
        out["reserved"] = {role: resources_json(_of_role(r, role)) for role in roles}
    return out


def quantities_json(q: Mapping[str, int]) -> dict[str, Any]:
    """A quota's quantities (milli-units by name, zeros kept) in the same units."""
    out: dict[str, Any] = {}
    for name, milli in sorted(q.items()):
        if name in ("mem", "disk"):
            out[f"{name}_bytes"] = milli * MIB // MILLI
        else:
            out[name] = milli / MILLI
    return out


def _of_role(r: Resources, role: str) -> Resources:
    return Resources(
        scalars={(n, ""): v for (n, rl), v in r.scalars.items() if rl == role},
        ranges={(n, ""): v for (n, rl), v in r.ranges.items() if rl == role},
        sets={(n, ""): v for (n, rl), v in r.sets.items() if rl == role},
    )
