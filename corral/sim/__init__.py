"""A deterministic simulation of a corral cluster (issue 17).

The real master (:class:`corral.master.master.Master`, with its allocator,
launch, liveness, reconciliation and agent registration), the real SDK driver
and the real batch engine run on one event loop whose clock is virtual
(:mod:`corral.sim.loop`). Agents, the network, elections and the registry are
simulated (:mod:`corral.sim.agent`, :mod:`corral.sim.network`,
:mod:`corral.sim.masters`); faults follow a seed (:mod:`corral.sim.faults`)
and invariants are checked after every step (:mod:`corral.sim.invariants`).
The same seed gives the same history, byte for byte.

>>> from corral.sim.run import run_seed
>>> result = run_seed(7, hours=0.05)  # doctest: +SKIP
>>> result.violations  # doctest: +SKIP
[]
"""
