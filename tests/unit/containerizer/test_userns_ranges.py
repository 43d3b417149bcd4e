"""The user namespace isolator's id ranges: host-wide, never shared, kept across
a restart and freed at cleanup (a registry in a temporary directory, real files
and flock; no kernel namespace is made here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.slave.containerizer.errors import ContainerError
from corral.slave.containerizer.isolator import Running
from corral.slave.containerizer.isolators.userns import RANGE_SIZE, UserNamespaceIsolator
from corral.slave.containerizer.model import ContainerConfig, Isolation

FIRST = 1 << 30


def config(tmp_path: Path, cid: str, userns: bool = True) -> ContainerConfig:
    return ContainerConfig(
        container_id=cid,
        argv=("true",),
        env={},
        sandbox=tmp_path / "sb" / cid,
        cpus_milli=100,
        mem_bytes=1 << 20,
        isolation=Isolation(user_namespace=userns),
    )


def meta(tmp_path: Path, cid: str) -> Path:
    d = tmp_path / "containers" / cid
    d.mkdir(parents=True, exist_ok=True)
    return d


def base_of(iso: UserNamespaceIsolator, tmp_path: Path, cid: str) -> int:
    prepared = iso.prepare(config(tmp_path, cid), meta(tmp_path, cid))
    assert prepared.userns is not None
    assert prepared.userns.size == RANGE_SIZE
    return prepared.userns.base


def test_no_range_without_the_option(tmp_path: Path) -> None:
    iso = UserNamespaceIsolator(tmp_path / "reg", FIRST, 4)
    assert iso.prepare(config(tmp_path, "a", userns=False), meta(tmp_path, "a")).userns is None
    assert not (tmp_path / "reg").exists()


def test_two_agents_sharing_a_registry_never_share_a_range(tmp_path: Path) -> None:
    one = UserNamespaceIsolator(tmp_path / "reg", FIRST, 4)
    two = UserNamespaceIsolator(tmp_path / "reg", FIRST, 4)
    bases = [base_of(one, tmp_path, "a"), base_of(two, tmp_path, "b"), base_of(one, tmp_path, "c")]
    assert bases == [FIRST, FIRST + RANGE_SIZE, FIRST + 2 * RANGE_SIZE]


def test_exhausted_ranges_are_refused_with_a_sentence(tmp_path: Path) -> None:
    iso = UserNamespaceIsolator(tmp_path / "reg", FIRST, 2)
    base_of(iso, tmp_path, "a")
    base_of(iso, tmp_path, "b")
    with pytest.raises(ContainerError, match="all 2 id ranges of this host are in use"):
        base_of(iso, tmp_path, "c")


def test_cleanup_frees_the_range(tmp_path: Path) -> None:
    iso = UserNamespaceIsolator(tmp_path / "reg", FIRST, 2)
    first = base_of(iso, tmp_path, "a")
    base_of(iso, tmp_path, "b")
    iso.cleanup("a")
    iso.cleanup("a")  # idempotent
    assert base_of(iso, tmp_path, "c") == first


def test_a_claim_whose_container_is_gone_is_reclaimed_when_needed(tmp_path: Path) -> None:
    iso = UserNamespaceIsolator(tmp_path / "reg", FIRST, 1)
    base_of(iso, tmp_path, "a")
    # Its agent died and its work dir was wiped: nobody will clean it up.
    (tmp_path / "containers" / "a" / "userns.json").unlink()
    (tmp_path / "containers" / "a").rmdir()
    assert base_of(UserNamespaceIsolator(tmp_path / "reg", FIRST, 1), tmp_path, "b") == FIRST


async def test_a_restarted_agent_keeps_the_range_of_a_recovered_container(tmp_path: Path) -> None:
    before = UserNamespaceIsolator(tmp_path / "reg", FIRST, 2)
    kept = base_of(before, tmp_path, "a")
    after = UserNamespaceIsolator(tmp_path / "reg", FIRST, 2)
    done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    after.recover(Running(config(tmp_path, "a"), meta(tmp_path, "a"), "", done))  # type: ignore[arg-type]
    held = after.held("a")
    assert held is not None
    assert held.base == kept
    assert base_of(after, tmp_path, "b") != kept
    after.cleanup("a")
    assert not (tmp_path / "reg" / str(kept)).exists()


def test_release_of_a_leftover_spares_a_range_handed_on(tmp_path: Path) -> None:
    iso = UserNamespaceIsolator(tmp_path / "reg", FIRST, 1)
    base = base_of(iso, tmp_path, "a")
    claim = tmp_path / "reg" / str(base)
    claim.write_bytes(b"/somewhere/else")  # reclaimed and given to another container meanwhile
    iso.release_leftover(meta(tmp_path, "a"))
    assert claim.exists()
    claim.write_bytes(bytes(meta(tmp_path, "a")))
    iso.release_leftover(meta(tmp_path, "a"))
    assert not claim.exists()


def test_ids_must_fit_in_uid_t() -> None:
    with pytest.raises(ContainerError, match="do not fit"):
        UserNamespaceIsolator(Path("/nonexistent"), 2**32 - RANGE_SIZE, 2)
