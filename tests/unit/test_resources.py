"""Exact resource arithmetic (corral/resources.py) and its wire edge (corral/codec.py).

Properties over examples: the algebra (commutativity, subtract undoes add,
containment) must hold for any bag of scalars, ranges and roles, because the
allocator's conservation invariant rests on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.codec import parse_attributes, resources_from_proto, resources_to_proto
from corral.proto import messages_pb2 as pb
from corral.resources import (
    MILLI,
    RangeSet,
    ResourceError,
    Resources,
    dominant_share,
    format_milli,
    to_milli,
)

PROPS = settings(max_examples=40, deadline=None)

# -- strategies ---------------------------------------------------------------

ROLES = st.sampled_from(["", "ml", "web/prod"])
SCALAR_NAMES = st.sampled_from(["cpus", "mem", "disk", "gpus"])
# Milli-units, so every generated quantity is exactly representable.
MILLIS = st.integers(min_value=1, max_value=10**9)


@st.composite
def range_sets(draw: st.DrawFn, lo: int = 0, hi: int = 2000) -> RangeSet:
    pairs = draw(
        st.lists(
            st.tuples(st.integers(lo, hi), st.integers(0, 50)).map(lambda p: (p[0], p[0] + p[1])),
            max_size=4,
        )
    )
    return RangeSet.of(pairs)


@st.composite
def resources(draw: st.DrawFn) -> Resources:
    scalars = draw(st.dictionaries(st.tuples(SCALAR_NAMES, ROLES), MILLIS, max_size=5))
    ranges = draw(st.dictionaries(st.tuples(st.just("ports"), ROLES), range_sets(), max_size=2))
    return Resources(scalars=scalars, ranges={k: v for k, v in ranges.items() if v})


def _with_sets(r: Resources, sets: dict[tuple[str, str], frozenset[str]]) -> Resources:
    return Resources(r.scalars, r.ranges, {k: v for k, v in sets.items() if v})


SET_ITEMS = st.frozensets(st.sampled_from(["a", "b", "c", "d"]), max_size=3)
resources_with_sets = st.builds(
    _with_sets, resources(), st.dictionaries(st.tuples(st.just("zones"), ROLES), SET_ITEMS, max_size=2)
)


# -- the algebra --------------------------------------------------------------


@PROPS
@given(resources_with_sets, resources_with_sets)
def test_addition_commutes(a: Resources, b: Resources) -> None:
    assert a + b == b + a


@PROPS
@given(resources(), resources())
def test_subtract_undoes_add(a: Resources, b: Resources) -> None:
    # Ranges are sets: (a|b)-b loses a's ports that b also holds, so keep them disjoint.
    b = b.subtract_clamped(Resources(ranges=a.ranges))
    assert (a + b) - b == a


@PROPS
@given(resources_with_sets, resources_with_sets)
def test_contains_self_and_sums(a: Resources, b: Resources) -> None:
    assert a.contains(a)
    assert a <= a + Resources()
    assert (a + b).contains(a)
    assert (a + b) >= b


@PROPS
@given(resources_with_sets, resources_with_sets)
def test_subtract_raises_when_not_contained(a: Resources, b: Resources) -> None:
    if a.contains(b):
        assert (a - b) + b >= a  # ranges/sets of b may overlap what stays
    else:
        with pytest.raises(ResourceError, match="cannot subtract"):
            a - b


@PROPS
@given(resources_with_sets, resources_with_sets)
def test_subtract_clamped_never_negative_and_inside(a: Resources, b: Resources) -> None:
    left = a.subtract_clamped(b)
    assert all(v > 0 for v in left.scalars.values())
    assert all(rs for rs in left.ranges.values())
    assert all(s for s in left.sets.values())
    assert a.contains(left)


def test_zero_entries_are_not_stored() -> None:
    a = Resources.of(cpus=1, mem=256)
    assert a - Resources.of(cpus=1) == Resources.of(mem=256)
    assert (a - a).is_empty()
    assert not (a - a)


# -- RangeSet -----------------------------------------------------------------


def test_rangeset_of_merges_overlapping_and_adjacent() -> None:
    assert RangeSet.of([(5, 7), (1, 3), (4, 4), (10, 12), (11, 20)]).intervals == ((1, 7), (10, 20))
    assert RangeSet.of([(1, 2), (4, 5)]).intervals == ((1, 2), (4, 5))  # gap of one value stays


@PROPS
@given(range_sets())
def test_rangeset_is_normalised(r: RangeSet) -> None:
    for (_, end), (begin, _) in zip(r.intervals, r.intervals[1:], strict=False):
        assert begin > end + 1  # sorted, disjoint and not adjacent
    assert RangeSet.of(r.intervals) == r


@PROPS
@given(range_sets(lo=0, hi=1000), range_sets(lo=1100, hi=2000))
def test_rangeset_size_additive_for_disjoint(x: RangeSet, y: RangeSet) -> None:
    assert (x | y).size() == x.size() + y.size()


@PROPS
@given(range_sets(), range_sets())
def test_rangeset_difference_and_union(x: RangeSet, y: RangeSet) -> None:
    diff = (x | y) - y
    assert not (diff - (diff - y))  # diff ∩ y is empty
    values_diff = {v for b, e in diff.intervals for v in range(b, e + 1)}
    values_y = {v for b, e in y.intervals for v in range(b, e + 1)}
    assert not values_diff & values_y
    assert (x | y).contains(x)
    assert (x | y).contains(y)
    assert x.contains(x - y)
    assert diff | y == x | y
    assert diff.size() + y.size() == (x | y).size()


def test_rangeset_contains_and_first() -> None:
    r = RangeSet.parse("[31000-31009, 32000-32001]")
    assert r.contains(RangeSet.of([(31005, 31009)]))
    assert not r.contains(RangeSet.of([(31009, 31010)]))
    assert r.first(11) == RangeSet.of([(31000, 31009), (32000, 32000)])
    with pytest.raises(ResourceError, match="only 12 values available"):
        r.first(13)


# -- parse / format -----------------------------------------------------------


@PROPS
@given(resources_with_sets)
def test_format_parse_round_trip(r: Resources) -> None:
    assert Resources.parse(r.format()) == r


def test_parse_example() -> None:
    r = Resources.parse(" cpus:1.5 ; mem:512;ports:[31000-31009];cpus(ml):2;zones:{b,a};")
    assert r.scalar("cpus") == 3500
    assert r.scalar("cpus", "") == 1500
    assert r.scalar("cpus", "ml") == 2000
    assert r.range("ports") == RangeSet.of([(31000, 31009)])
    assert r.sets[("zones", "")] == frozenset({"a", "b"})
    assert r.format() == "cpus(ml):2;cpus:1.5;mem:512;ports:[31000-31009];zones:{a,b}"


def test_format_milli_without_float_noise() -> None:
    assert [format_milli(m) for m in (0, 1, 10, 100, 1500, 2000, 123456)] == [
        "0",
        "0.001",
        "0.01",
        "0.1",
        "1.5",
        "2",
        "123.456",
    ]


# -- exactness ----------------------------------------------------------------


def test_tenths_sum_exactly() -> None:
    assert to_milli(0.1) * 10 == to_milli(1.0)
    assert sum(0.1 for _ in range(10)) != 1.0  # the float drift fixed-point avoids
    tenth = Resources.of(cpus=0.1)
    total = Resources()
    for _ in range(10):
        total = total + tenth
    assert total == Resources.of(cpus=1)
    assert Resources.of(cpus=0.1) + Resources.of(cpus=0.2) == Resources.of(cpus=0.3)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-0.5, "must be >= 0"),
        (math.nan, "must be finite"),
        (math.inf, "must be finite"),
        (-math.inf, "must be finite"),
        (True, "must be a number"),
        ("1", "must be a number"),
        (1e300, "too large"),
    ],
)
def test_to_milli_rejects(value: object, message: str) -> None:
    with pytest.raises(ResourceError, match=message) as err:
        to_milli(value, "tasks[0].cpus")  # type: ignore[arg-type]
    assert "tasks[0].cpus" in str(err.value)


def test_dominant_share() -> None:
    total = Resources.of(cpus=10, mem=1000)
    # cpus 2/10 = 0.2, mem 300/1000 = 0.3 -> dominant is mem at 0.3
    assert dominant_share(Resources.of(cpus=2, mem=300), total) == pytest.approx(0.3)
    assert dominant_share(Resources(), total) == 0.0
    # a resource the cluster does not have counts for nothing
    assert dominant_share(Resources.of(gpus=1), total) == 0.0
    # reserved quantities count against the unreserved total by name
    assert dominant_share(Resources.parse("cpus(ml):5"), total) == pytest.approx(0.5)


# -- bad input names the field ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("cpus:-1", "cpus"),
        ("mem:nan", "mem"),
        ("disk:inf", "disk"),
        ("mem:1e400", "mem"),
        ("cpus:lots", "cpus"),
        ("cpus:0x10", "cpus"),
        ("cpus", "cpus"),
        ("ports:100", "ports"),
        ("Cpus:1", "Cpus"),
        ("9lives:1", "9lives"),
        ("cpus(b@d):1", "cpus"),
        ("cpus(ml:1", "cpus"),
        ("cpus:1;cpus:2", "cpus"),
        ("ports:[1-2];ports:[5-6]", "ports"),
        ("zones:{a", "zones"),
    ],
)
def test_parse_rejects_and_names_field(text: str, field: str) -> None:
    with pytest.raises(ResourceError) as err:
        Resources.parse(text)
    assert field in str(err.value)


@pytest.mark.parametrize("text", ["cpus:[1-2]", "mem:{a,b}", "ports:{a}"])
def test_parse_rejects_wrong_kind_for_known_names(text: str) -> None:
    with pytest.raises(ResourceError, match=text.split(":", maxsplit=1)[0]):
        Resources.parse(text)


@pytest.mark.parametrize("text", ["ports:[5-3]", "ports:[a-b]", "ports:[1-2"])
def test_parse_range_errors_name_the_resource(text: str) -> None:
    with pytest.raises(ResourceError, match="ports"):
        Resources.parse(text)


# -- codec --------------------------------------------------------------------


@PROPS
@given(resources_with_sets)
def test_proto_round_trip(r: Resources) -> None:
    wire = resources_to_proto(r)
    again = resources_from_proto([pb.Resource.FromString(m.SerializeToString()) for m in wire])
    assert again == r


R = pb.Resource
V = pb.Value


def _ranges(*pairs: tuple[int, int]) -> pb.Value.Ranges:
    return V.Ranges(range=[V.Range(begin=b, end=e) for b, e in pairs])


@pytest.mark.parametrize(
    ("items", "field"),
    [
        ([R(name="cpus", scalar=-1)], "resources[0] (cpus).scalar"),
        ([R(name="cpus", scalar=1), R(name="mem", scalar=math.nan)], "resources[1] (mem).scalar"),
        ([R(name="disk", scalar=math.inf)], "resources[0] (disk).scalar"),
        ([R(name="cpus", scalar=1e300)], "resources[0] (cpus).scalar"),
        ([R(name="cpus")], "resources[0] (cpus)"),
        ([R(name="ports", scalar=3)], "resources[0] (ports)"),
        ([R(name="cpus", ranges=_ranges((1, 2)))], "resources[0] (cpus)"),
        ([R(name="cpus", set=V.Set(item=["a"]))], "resources[0] (cpus)"),
        ([R(name="ports", set=V.Set(item=["a"]))], "resources[0] (ports)"),
        ([R(name="ports", ranges=_ranges((5, 3)))], "resources[0] (ports).ranges"),
        ([R(name="", scalar=1)], "resources[0].name"),
        ([R(name="CPU", scalar=1)], "resources[0].name"),
        ([R(name="cpus", role="a b", scalar=1)], "resources[0] (cpus).role"),
        ([R(name="cpus", role="/ml", scalar=1)], "resources[0] (cpus).role"),
    ],
)
def test_from_proto_rejects_and_names_field(items: list[pb.Resource], field: str) -> None:
    with pytest.raises(ResourceError) as err:
        resources_from_proto(items, "tasks[2].resources")
    assert f"tasks[2].{field}" in str(err.value)


def test_from_proto_duplicates_add_up() -> None:
    # Documented: duplicates of one name and role add up (unlike the flag syntax,
    # where Resources.parse rejects them); ranges union.
    got = resources_from_proto(
        [
            R(name="cpus", scalar=1),
            R(name="cpus", scalar=0.5),
            R(name="ports", ranges=_ranges((1, 10))),
            R(name="ports", ranges=_ranges((11, 12))),
        ]
    )
    assert got == Resources.parse("cpus:1.5;ports:[1-12]")


def test_from_proto_zero_quantities_dropped() -> None:
    got = resources_from_proto([R(name="cpus", scalar=0), R(name="ports", ranges=_ranges())])
    assert got.is_empty()


def test_from_proto_star_role_is_unreserved() -> None:
    assert resources_from_proto([R(name="cpus", role="*", scalar=1)]) == Resources.of(cpus=1)


def test_parse_attributes() -> None:
    assert parse_attributes(" rack:r1 ; zone : a ;;") == {"rack": "r1", "zone": "a"}
    assert parse_attributes("") == {}
    for bad in ["rack", ":x", "a:1;rack"]:
        with pytest.raises(ValueError, match="attribute"):
            parse_attributes(bad)


def test_parse_attributes_rejects_duplicates() -> None:
    with pytest.raises(ValueError, match="a"):
        parse_attributes("a:1;a:2")


def test_milli_constant() -> None:
    assert MILLI == 1000
    assert Resources.of(mem=32).scalar("mem") == 32 * MILLI


@pytest.mark.parametrize("build", [lambda: Resources.of(cpus=0.0001), lambda: Resources.parse("cpus:0.0004")])
def test_a_quantity_below_the_resolution_is_refused_not_dropped(build: Callable[[], Resources]) -> None:
    # 0.0001 cpus would round to 0 milli-cpus and vanish; the author meant something.
    with pytest.raises(ResourceError, match=r"^cpus: 0\.000[14] is below the resolution of 0\.001$"):
        build()


def test_the_resolution_itself_and_rounding_above_it_are_kept() -> None:
    assert Resources.of(cpus=0.001).scalar("cpus") == 1
    assert Resources.of(cpus=0.0015).scalar("cpus") == 2  # three decimals, as Mesos rounds
    assert Resources.of(cpus=0, mem=32) == Resources.of(mem=32)  # an explicit zero is no quantity


def test_the_module_examples_run() -> None:
    import doctest

    import corral.resources

    result = doctest.testmod(corral.resources)
    assert result.attempted >= 2
    assert result.failed == 0
