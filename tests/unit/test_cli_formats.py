"""The pure parts of the CLI's output: id matching, TSV, resources in base units,
and the exit-code mapping."""

from __future__ import annotations

import grpc
import pytest
from rich.text import Text

from corral.cli import exit as exit_codes
from corral.cli.ids import Candidate, IdLookupError, match
from corral.cli.output import Column, key, resources_json, tsv
from corral.resources import Resources

AGENTS = [Candidate("abc-S1", "host-a"), Candidate("abc-S10", "host-b"), Candidate("xyz-S2", "host-a")]


def test_exact_id_wins_over_a_prefix_of_another() -> None:
    assert match("agent", "abc-S1", AGENTS).id == "abc-S1"


def test_a_unique_prefix_names_one() -> None:
    assert match("agent", "xy", AGENTS).id == "xyz-S2"


def test_an_ambiguous_prefix_is_refused_naming_the_candidates() -> None:
    with pytest.raises(IdLookupError, match=r"ambiguous: 2 agents match \(abc-S1 \(host-a\), abc-S10"):
        match("agent", "abc", AGENTS)


def test_nothing_matching_is_refused_naming_what_is_known() -> None:
    with pytest.raises(IdLookupError, match=r"no agent has this id.*known: abc-S1"):
        match("agent", "nope", AGENTS)
    with pytest.raises(IdLookupError):
        match("agent", "host-a", AGENTS)  # hostnames are not ids


def test_frameworks_match_by_whole_name_not_by_name_prefix() -> None:
    fws = [
        Candidate("fw-1", "batch"),
        Candidate("fw-2", "service"),
        Candidate("fw-3", "run"),
        Candidate("fw-4", "run"),
    ]
    assert match("framework", "batch", fws, by_name=True).id == "fw-1"
    with pytest.raises(IdLookupError, match="give an id"):
        match("framework", "run", fws, by_name=True)
    with pytest.raises(IdLookupError):
        match("framework", "bat", fws, by_name=True)


def test_tsv_has_one_header_and_flattens_tabs_and_newlines() -> None:
    columns = [Column("id", key("id")), Column("message", lambda r: Text(r["m"]))]
    assert tsv(columns, [{"id": "a", "m": "x\ty\nz"}]) == "id\tmessage\na\tx y z\n"


def test_resources_in_base_units() -> None:
    r = Resources.parse("cpus:1.5;mem:256;disk:10;ports:[31000-31002];cpus(ml):1")
    assert resources_json(r) == {
        "cpus": 2.5,
        "mem_bytes": 256 << 20,
        "disk_bytes": 10 << 20,
        "ports": [[31000, 31002]],
        "reserved": {"ml": {"cpus": 1.0, "mem_bytes": 0, "disk_bytes": 0}},
    }


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNAVAILABLE, 3),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 3),
        (grpc.StatusCode.NOT_FOUND, 4),
        (grpc.StatusCode.PERMISSION_DENIED, 4),
        (grpc.StatusCode.FAILED_PRECONDITION, 4),
        (grpc.StatusCode.INVALID_ARGUMENT, 2),
        (grpc.StatusCode.INTERNAL, 1),
    ],
)
def test_grpc_codes_map_to_exit_statuses(code: grpc.StatusCode, status: int) -> None:
    assert exit_codes.from_grpc(code) == status
    assert exit_codes.from_grpc_name(code.name) == status


def test_http_statuses_map_to_exit_statuses() -> None:
    assert [exit_codes.from_http(s) for s in (None, 400, 403, 404, 500, 503)] == [3, 2, 4, 4, 1, 3]
