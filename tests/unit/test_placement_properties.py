"""Properties of the placement pipeline for random clusters and tasks, checked
against a brute-force oracle written apart from the checkers:

- "never fits" is said exactly when no agent's *total* holds the task (every
  asked quantity, the number of ports) under its constraints;
- every suggested change, applied, makes the task placeable (by the oracle,
  on free resources; on totals when it never fits), smallest first;
- a change is offered whenever one agent meets the constraints and has some
  of everything asked (lowering the request to it would do).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.frameworks.constraints import Constraint
from corral.frameworks.fit_change import explain
from corral.frameworks.placement import Ask, Candidate
from corral.resources import RangeSet, Resources

CONSTRAINTS = [
    ("rack", "==", ("r1",)),
    ("rack", "!=", ("r2",)),
    ("zone", "in", ("a", "b")),
    ("zone", "not in", ("a",)),
    ("gpu", "exists", ()),
]


@dataclass(frozen=True)
class Node:
    """An agent in the oracle's own terms: plain integers and a dict."""

    cpus: int
    mem: int
    ports: int
    free_cpus: int
    free_mem: int
    free_ports: int
    attrs: dict[str, str]


def holds(cons: tuple[str, str, tuple[str, ...]], attrs: dict[str, str]) -> bool:
    attr, op, values = cons
    v = attrs.get(attr)
    if op == "exists":
        return v is not None
    if op in ("==", "in"):
        return v in values
    return v not in values


def oracle_fits(
    cpus: int,
    mem: int,
    ports: int,
    cons: list[tuple[str, str, tuple[str, ...]]],
    nodes: list[Node],
    free: bool,
) -> bool:
    for n in nodes:
        have = (n.free_cpus, n.free_mem, n.free_ports) if free else (n.cpus, n.mem, n.ports)
        if have[0] >= cpus and have[1] >= mem and have[2] >= ports and all(holds(c, n.attrs) for c in cons):
            return True
    return False


def to_candidate(i: int, n: Node) -> Candidate:
    def res(cpus: int, mem: int, ports: int) -> Resources:
        r = Resources({k: v for k, v in {("cpus", ""): cpus, ("mem", ""): mem}.items() if v})
        if ports:
            r = r + Resources(ranges={("ports", ""): RangeSet.of([(31000, 31000 + ports - 1)])})
        return r

    return Candidate(
        f"a{i}",
        f"host-{i}",
        res(n.free_cpus, n.free_mem, n.free_ports),
        n.attrs,
        total=res(n.cpus, n.mem, n.ports),
    )


@st.composite
def nodes(draw: st.DrawFn) -> Node:
    cpus = draw(st.integers(0, 4000))
    mem = draw(st.integers(0, 4096))
    ports = draw(st.integers(0, 4))
    attrs = {}
    for name, values in (("rack", ["r1", "r2"]), ("zone", ["a", "b", "c"]), ("gpu", ["1"])):
        v = draw(st.sampled_from([None, *values]))
        if v is not None:
            attrs[name] = v
    return Node(
        cpus,
        mem,
        ports,
        draw(st.integers(0, cpus)),
        draw(st.integers(0, mem)),
        draw(st.integers(0, ports)),
        attrs,
    )


clusters = st.lists(nodes(), min_size=0, max_size=5)
asks = st.tuples(
    st.integers(1, 5000),
    st.integers(1, 5000),
    st.integers(0, 3),
    st.lists(st.sampled_from(CONSTRAINTS), max_size=2, unique=True),
)


def make_ask(cpus: int, mem: int, ports: int, cons: list[tuple[str, str, tuple[str, ...]]]) -> Ask:
    return Ask(
        Resources({("cpus", ""): cpus, ("mem", ""): mem}),
        tuple(Constraint(a, op, vs) for a, op, vs in cons),
        ports=ports,
    )


def ask_numbers(ask: Ask) -> tuple[int, int, int, list[tuple[str, str, tuple[str, ...]]]]:
    return (
        ask.resources.scalar("cpus"),
        ask.resources.scalar("mem"),
        ask.ports,
        [(c.attribute, c.op, c.values) for c in ask.constraints],
    )


def as_nodes(agents: list[Candidate]) -> list[Node]:
    def triple(r: Resources) -> tuple[int, int, int]:
        return r.scalar("cpus"), r.scalar("mem"), r.range("ports").size()

    return [Node(*triple(a.capacity), *triple(a.resources), dict(a.attributes)) for a in agents]


@settings(max_examples=400, deadline=None)
@given(cluster=clusters, task=asks)
def test_never_fits_exactly_when_no_total_holds_the_task(
    cluster: list[Node], task: tuple[int, int, int, list[tuple[str, str, tuple[str, ...]]]]
) -> None:
    cpus, mem, ports, cons = task
    agents = [to_candidate(i, n) for i, n in enumerate(cluster)]
    why = explain(make_ask(cpus, mem, ports, cons), agents)
    assert (why.never is not None) == (not oracle_fits(cpus, mem, ports, cons, cluster, free=False))


@settings(max_examples=400, deadline=None)
@given(cluster=clusters, task=asks)
def test_every_suggested_change_applied_makes_the_task_placeable(
    cluster: list[Node], task: tuple[int, int, int, list[tuple[str, str, tuple[str, ...]]]]
) -> None:
    cpus, mem, ports, cons = task
    agents = [to_candidate(i, n) for i, n in enumerate(cluster)]
    ask = make_ask(cpus, mem, ports, cons)
    why = explain(ask, agents)
    # The view the changes are about: totals when it never fits, else free now.
    view = (
        [Candidate(a.agent_id, a.hostname, a.capacity, a.attributes) for a in agents] if why.never else agents
    )
    free_view = why.never is None
    placeable_now = oracle_fits(cpus, mem, ports, cons, as_nodes(view), free=True)
    if placeable_now:
        assert not why.changes
    for change in why.changes:
        new_ask, new_agents = change.apply(ask, view)
        assert oracle_fits(*ask_numbers(new_ask), as_nodes(new_agents), free=True), str(change)
    assert [c.cost for c in why.changes] == sorted(c.cost for c in why.changes)
    # Lowering to any agent that meets the constraints and has some of everything asked would do.
    nodes_now = as_nodes(view)
    lowerable = any(
        n.free_cpus > 0
        and n.free_mem > 0
        and (n.free_ports > 0 or not ports)
        and all(holds(c, n.attrs) for c in cons)
        for n in nodes_now
    )
    if lowerable and not placeable_now:
        assert why.changes, f"no change offered (free view: {free_view})"
