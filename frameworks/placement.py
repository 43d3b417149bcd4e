"""The placement pipeline of the bundled frameworks: feasibility, then rank.

A task's needs are an :class:`Ask`; an agent as placement sees it is a
:class:`Candidate` (an offer's free resources, or an agent's total). Small
pure checkers, cheapest first, each answer ``None`` (feasible) or a
:class:`Reason` that names the checker, the agent, what was asked and what
was there, as Nomad's feasibility iterators and the Kubernetes Filter plugins
do (docs/architecture.md, "Placement pipeline"). Rankers then order the
feasible candidates (``spread``, ``binpack``).

    >>> ask = Ask(Resources.of(cpus=1, mem=64))
    >>> small = Candidate("a1", "host-1", Resources.of(cpus=0.666, mem=1024))
    >>> print(feasible(ask, small))
    host-1: not enough resources (needs cpus:1;mem:64)
    >>> print(never_fits(ask, [small]))
    no agent can ever fit this task: cpus 1 asked, the largest agent has 0.666

:func:`never_fits` asks the static checkers (constraints, image, resources)
against agents' *totals*; :mod:`corral.frameworks.fit_change` computes the
smallest change that would make a pending task fit.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from corral.frameworks.constraints import Constraint
from corral.frameworks.types import Offer, Task
from corral.image_refs import is_remote_ref
from corral.resources import RangeSet, Resources, format_milli


@dataclass(frozen=True)
class Ask:
    """What one task needs of an agent."""

    resources: Resources
    constraints: tuple[Constraint, ...] = ()
    #: how many ports, picked from the agent's free ``ports`` ranges
    ports: int = 0
    #: at most one task of its group per agent (``siblings`` says where they run)
    unique_host: bool = False
    #: at most one task of its group per value of each of these attributes
    unique_attributes: tuple[str, ...] = ()
    image: str = ""


@dataclass(frozen=True)
class Candidate:
    """An agent as placement sees it: ``resources`` is what is there (an
    offer's, or the agent's free resources), ``total`` what it has at all."""

    agent_id: str
    hostname: str
    resources: Resources
    attributes: Mapping[str, str] = field(default_factory=dict)
    #: the images the agent says it has; None: it does not say (not checked)
    images: frozenset[str] | None = None
    total: Resources | None = None

    @classmethod
    def of_offer(cls, offer: Offer) -> Candidate:
        return cls(offer.agent_id, offer.hostname, offer.resources, offer.attributes)

    @property
    def capacity(self) -> Resources:
        return self.resources if self.total is None else self.total


@dataclass(frozen=True)
class Siblings:
    """Where the other live tasks of the same group (or service) run."""

    agents: frozenset[str] = frozenset()
    #: attribute -> the values taken by a sibling
    values: Mapping[str, frozenset[str]] = field(default_factory=dict)


NO_SIBLINGS = Siblings()


@dataclass(frozen=True)
class Reason:
    """Why a checker rejected an agent for a task."""

    checker: str
    agent_id: str
    hostname: str
    #: what the task asked, in the checker's words ("cpus:1;mem:64", "rack == r1")
    asked: str
    #: what the agent had ("cpus:0.666;mem:1024", "rack=r2", "an instance runs there")
    there: str
    #: one sentence a user reads after the host name
    detail: str

    def __str__(self) -> str:
        return f"{self.hostname or self.agent_id}: {self.detail}"


Checker = Callable[[Ask, Candidate, Siblings], "Reason | None"]


def check_constraints(ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS) -> Reason | None:
    for con in ask.constraints:
        if not con.matches(c.attributes, c.hostname, c.agent_id):
            value = c.attributes.get(con.attribute)
            if value is None and con.attribute in ("hostname", "agent_id"):
                value = c.hostname if con.attribute == "hostname" else c.agent_id
            there = f"{con.attribute}={value}" if value is not None else f"no attribute {con.attribute!r}"
            return Reason("constraints", c.agent_id, c.hostname, str(con), there, f"constraint {con} not met")
    return None


def check_unique_host(ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS) -> Reason | None:
    if ask.unique_host and c.agent_id in siblings.agents:
        return Reason(
            "unique_host",
            c.agent_id,
            c.hostname,
            "one per host",
            "an instance runs there",
            "unique hostname: an instance runs there",
        )
    return None


def check_unique_attributes(ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS) -> Reason | None:
    for attr in ask.unique_attributes:
        value = c.attributes.get(attr)
        if value is None:
            detail = f"unique {attr}: the agent has no attribute {attr!r}"
            return Reason("unique_attribute", c.agent_id, c.hostname, f"unique {attr}", "none", detail)
        if value in siblings.values.get(attr, frozenset()):
            detail = f"unique {attr}: an instance runs on {attr}={value}"
            there = f"{attr}={value}"
            return Reason("unique_attribute", c.agent_id, c.hostname, f"unique {attr}", there, detail)
    return None


def check_image(ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS) -> Reason | None:
    if not ask.image or c.images is None or ask.image in c.images or is_remote_ref(ask.image):
        return None  # (a registry image is pulled by the agent that runs it)
    there = ", ".join(sorted(c.images)) or "no images"
    return Reason("image", c.agent_id, c.hostname, ask.image, there, f"image {ask.image} not on the agent")


def check_ports(ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS) -> Reason | None:
    have = c.resources.range("ports").size()
    if ask.ports and have < ask.ports:
        detail = f"not {ask.ports} free port(s)"
        return Reason("ports", c.agent_id, c.hostname, f"{ask.ports} port(s)", str(have), detail)
    return None


def check_resources(ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS) -> Reason | None:
    if c.resources.contains(ask.resources):
        return None
    return Reason(
        "resources",
        c.agent_id,
        c.hostname,
        ask.resources.format(),
        c.resources.format() or "nothing",
        f"not enough resources (needs {ask.resources})",
    )


#: every checker, cheapest first
CHECKERS: tuple[Checker, ...] = (
    check_constraints,
    check_unique_host,
    check_unique_attributes,
    check_image,
    check_ports,
    check_resources,
)
#: the checkers whose answer cannot change while the agent stays as it is:
#: what decides "never fits" against an agent's total
STATIC_CHECKERS: tuple[Checker, ...] = (check_constraints, check_image, check_ports, check_resources)


def feasible(
    ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS, checkers: Sequence[Checker] = CHECKERS
) -> Reason | None:
    """The first checker's reason to reject ``c`` for ``ask``; None if it may go there."""
    for check in checkers:
        reason = check(ask, c, siblings)
        if reason is not None:
            return reason
    return None


def need(ask: Ask, c: Candidate) -> tuple[Resources, RangeSet] | None:
    """What launching ``ask`` on ``c`` takes: its resources plus the lowest
    free ports (and those ports); None if they are not there."""
    ports = RangeSet()
    if ask.ports:
        free = c.resources.range("ports")
        if free.size() < ask.ports:
            return None
        ports = free.first(ask.ports)
    total = ask.resources + Resources.of(ranges={"ports": ports}) if ports else ask.resources
    return (total, ports) if c.resources.contains(total) else None


# -- never fits ------------------------------------------------------------------


@dataclass(frozen=True)
class NeverFits:
    """No agent's total could ever hold the task under its constraints."""

    summary: str
    #: per agent, the static checker that rejects its total
    reasons: tuple[Reason, ...]

    def __str__(self) -> str:
        return self.summary


def as_totals(agents: Sequence[Candidate]) -> list[Candidate]:
    """The same agents with their totals as what is there."""
    return [Candidate(a.agent_id, a.hostname, a.capacity, a.attributes, a.images) for a in agents]


def never_fits(ask: Ask, agents: Sequence[Candidate]) -> NeverFits | None:
    """None when some agent's total could hold ``ask`` under its constraints
    (and image, and ports); else the reasons, with a one-line summary such as
    ``no agent can ever fit this task: cpus 1 asked, the largest agent has 0.666``."""
    totals = as_totals(agents)
    reasons = []
    for c in totals:
        reason = feasible(ask, c, NO_SIBLINGS, STATIC_CHECKERS)
        if reason is None:
            return None
        reasons.append(reason)
    return NeverFits(_summary(ask, totals, reasons), tuple(reasons))


def _summary(ask: Ask, totals: Sequence[Candidate], reasons: Sequence[Reason]) -> str:
    head = "no agent can ever fit this task: "
    if not totals:
        return head + "the cluster has no agents"
    matching = [c for c, r in zip(totals, reasons, strict=True) if r.checker in ("ports", "resources")]
    if not matching:
        by_constraint: dict[str, int] = {}
        for r in reasons:
            by_constraint[r.asked] = by_constraint.get(r.asked, 0) + 1
        worst = ", ".join(f"{k} (fails on {n})" for k, n in sorted(by_constraint.items()))
        checkers = {r.checker for r in reasons}
        what = "its constraints" if checkers == {"constraints"} else "its " + " and ".join(sorted(checkers))
        return head + f"no agent of {len(totals)} meets {what}: {worst}"
    for name, role in sorted(ask.resources.scalars):
        asked = ask.resources.scalars[(name, role)]
        largest = max(c.resources.scalar(name, role) for c in matching)
        if largest < asked:
            return head + f"{name} {format_milli(asked)} asked, the largest agent has {format_milli(largest)}"
    most_ports = max(c.resources.range("ports").size() for c in matching)
    if ask.ports > most_ports:
        return head + f"{ask.ports} ports asked, the largest agent has {most_ports}"
    for (name, role), rs in sorted(ask.resources.ranges.items()):
        if not any(c.resources.range(name, role).contains(rs) for c in matching):
            return head + f"{name} {rs.format()} asked, no agent has them"
    return head + f"{ask.resources} asked together, no single agent has them all"


# -- rankers ---------------------------------------------------------------------

Ranker = Callable[[Ask, Candidate, Siblings], float]


def spread(ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS) -> float:
    """Higher for an agent with no sibling and more of the asked resources left."""
    score = 0.0 if c.agent_id in siblings.agents else 1.0
    return score + _left_fraction(ask, c) / 2


def binpack(ask: Ask, c: Candidate, siblings: Siblings = NO_SIBLINGS) -> float:
    """Higher for the agent the task fills most (less fragmentation)."""
    return 1.0 - _left_fraction(ask, c)


def _left_fraction(ask: Ask, c: Candidate) -> float:
    """The mean fraction of each asked scalar left on ``c`` after the task."""
    fractions = []
    for key, asked in ask.resources.scalars.items():
        have = c.resources.scalars.get(key, 0)
        if have > 0:
            fractions.append(max(0, have - asked) / have)
    return sum(fractions) / len(fractions) if fractions else 0.0


def rank(
    ask: Ask, candidates: Sequence[Candidate], ranker: Ranker, siblings: Siblings = NO_SIBLINGS
) -> list[Candidate]:
    """The candidates best first (stable: ties keep their order)."""
    scored = sorted(enumerate(candidates), key=lambda ic: (-ranker(ask, ic[1], siblings), ic[0]))
    return [c for _, c in scored]


def order_offers(
    ask: Ask, offers: Sequence[Offer], ranker: Ranker, siblings: Siblings = NO_SIBLINGS
) -> list[Offer]:
    """``offers`` best first for ``ask`` by ``ranker`` (stable)."""
    scored = sorted(
        enumerate(offers), key=lambda io: (-ranker(ask, Candidate.of_offer(io[1]), siblings), io[0])
    )
    return [o for _, o in scored]


# -- the helpers frameworks wrote by hand ------------------------------------------


def ask_of(task: Task) -> Ask:
    """A plain task's ask: its resources and, if it has one, its image."""
    return Ask(task.resources, image=task.image)


def fits(task: Task, available: Resources) -> bool:
    """Whether ``task`` fits in ``available`` (unreserved or its role's)."""
    return available.contains(task.resources)


def pack(tasks: Sequence[Task], offer: Offer) -> tuple[list[Task], Resources]:
    """First-fit through the pipeline's checkers: the tasks (in order) that
    fit in the offer together, and what is left. Tasks that do not fit are
    skipped, not a reason to stop, so a big task at the head does not block
    small ones behind it."""
    left = offer.resources
    chosen: list[Task] = []
    # What is left only shrinks, so a request that did not fit once never
    # will: remember it (by identity; array jobs share one Resources object),
    # which turns a 10,000-task backlog into a few comparisons per offer.
    too_big: set[int] = set()
    for task in tasks:
        key = id(task.resources)
        if key in too_big:
            continue
        here = Candidate(offer.agent_id, offer.hostname, left, offer.attributes)
        if feasible(ask_of(task), here) is None:
            chosen.append(task)
            left = left - task.resources
        else:
            too_big.add(key)
    return chosen, left


def place(
    tasks: Sequence[Task],
    offers: Sequence[Offer],
    ranker: Ranker = spread,
    constraints: Sequence[Constraint] = (),
    running_on: Collection[str] = (),
) -> dict[str, list[Task]]:
    """Assign tasks to offers, one at a time, each to the best-ranked offer
    where it still fits and whose agent meets ``constraints``: ``spread`` (the
    default) puts each task where no other of these tasks went yet and most is
    left, ``binpack`` fills one agent before the next. Returns offer id ->
    tasks, for ``driver.launch(offer, tasks)``; tasks that fit nowhere are
    left out (``pack`` is the one-offer first fit). ``running_on``: agent
    ids where the caller's tasks already run (placed in earlier offer
    batches), which ``spread`` then counts as taken too.

    >>> offers = [Offer(f"o{i}", f"a{i}", f"h{i}", Resources.of(cpus=2, mem=256)) for i in (1, 2)]
    >>> tasks = [Task(f"t{i}", "true", Resources.of(cpus=0.5, mem=32)) for i in range(4)]
    >>> {o: [t.task_id for t in ts] for o, ts in place(tasks, offers).items()}
    {'o1': ['t0', 't2'], 'o2': ['t1', 't3']}
    >>> {o: [t.task_id for t in ts] for o, ts in place(tasks, offers, binpack).items()}
    {'o1': ['t0', 't1', 't2', 't3']}
    """
    left = {o.id: o.resources for o in offers}
    used: set[str] = set(running_on)
    chosen: dict[str, list[Task]] = {}
    for task in tasks:
        ask = Ask(task.resources, constraints=tuple(constraints), image=task.image)
        offer_of: dict[int, Offer] = {}
        candidates = []
        for o in offers:
            c = Candidate(o.agent_id, o.hostname, left[o.id], o.attributes)
            if feasible(ask, c) is None:
                offer_of[id(c)] = o
                candidates.append(c)
        if not candidates:
            continue
        best = offer_of[id(rank(ask, candidates, ranker, Siblings(agents=frozenset(used)))[0])]
        left[best.id] = left[best.id] - task.resources
        used.add(best.agent_id)
        chosen.setdefault(best.id, []).append(task)
    return chosen
