"""slave/containerizer/images/gc.py: the image GC plan, over generated stores."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.slave.containerizer.images.gc import Candidate, parse_size, plan

LAYERS = [f"{i:064x}" for i in range(8)]


@st.composite
def stores(draw: st.DrawFn) -> tuple[list[Candidate], dict[str, int], set[str]]:
    sizes = {h: draw(st.integers(0, 1000)) for h in LAYERS}
    n = draw(st.integers(0, 8))
    images = [
        Candidate(
            f"sha256:{i}",
            tuple(draw(st.lists(st.sampled_from(LAYERS), min_size=1, max_size=4))),
            draw(st.floats(0, 1000)),
            draw(st.booleans()),
        )
        for i in range(n)
    ]
    in_use = set(draw(st.lists(st.sampled_from(LAYERS), max_size=3)))
    return images, sizes, in_use


@settings(max_examples=300, deadline=None)
@given(store=stores(), high=st.integers(0, 8000), gap=st.integers(0, 3000), imported=st.booleans())
def test_the_plan_never_removes_what_is_used_imported_or_young_and_frees_what_it_says(
    store: tuple[list[Candidate], dict[str, int], set[str]], high: int, gap: int, imported: bool
) -> None:
    images, sizes, in_use = store
    low = max(0, high - gap)
    now, min_age = 1000.0, 100.0
    p = plan(images, sizes, in_use, high, low, include_imported=imported, now=now, min_age_s=min_age)
    by_id = {i.id: i for i in images}
    total = sum(sizes.values())
    assert p.size_before == total
    if total <= high:
        assert p.remove == ()
    for image_id in p.remove:
        image = by_id[image_id]
        assert not (in_use & set(image.layers))
        assert image.pulled or imported
        assert now - image.last_used >= min_age
    # What it frees is exactly the layers no kept image uses any more.
    kept_layers = {layer for i in images if i.id not in p.remove for layer in i.layers}
    gone = {layer for i in p.remove for layer in by_id[i].layers} - kept_layers
    assert p.freed_bytes == sum(sizes[layer] for layer in gone)
    assert p.size_after == total - p.freed_bytes
    # Least recently used first, and it stops once under the low mark.
    used = [by_id[i].last_used for i in p.remove]
    assert used == sorted(used)
    if p.remove:
        # Without its last removal it was still above the low mark.
        rest = set(p.remove[:-1])
        kept_then = {layer for i in images if i.id not in rest for layer in i.layers}
        freed_then = sum(
            sizes[layer] for layer in set(sizes) - kept_then if any(layer in by_id[r].layers for r in rest)
        )
        assert total - freed_then > low


def test_an_lru_example() -> None:
    a, b, c = LAYERS[:3]
    sizes = {a: 100, b: 100, c: 100}
    images = [
        Candidate("old", (a,), 10.0, True),
        Candidate("older-but-imported", (b,), 5.0, False),
        Candidate("new", (c,), 20.0, True),
    ]
    p = plan(images, sizes, set(), high_bytes=250, low_bytes=200, now=1000.0)
    assert p.remove == ("old",)
    assert (p.freed_bytes, p.size_after) == (100, 200)
    assert plan(images, sizes, set(), 300, 200, now=1000.0).remove == ()  # under the high mark
    assert plan(images, sizes, {a}, 250, 200, now=1000.0).remove == ("new",)  # "old" is in use


@pytest.mark.parametrize(
    ("text", "size"),
    [("123", 123), ("20GiB", 20 << 30), ("500Mi", 500 << 20), ("1.5G", 1_500_000_000), ("64 KiB", 64 << 10)],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_bad_size_names_the_forms() -> None:
    with pytest.raises(ValueError, match="not a size such as 20GiB"):
        parse_size("lots")
