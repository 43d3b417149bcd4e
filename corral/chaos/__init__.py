"""Fault injection on a ``corral cluster up`` cluster (``corral chaos``, issue 9).

A run brings a cluster up (or uses one), runs a workload through the real
frameworks, injects faults from a seeded schedule, samples what the cluster
says and what really runs, and checks invariants over the samples.

- ``schedule``: pure; ``random.Random(seed)`` → timed fault events, each healed.
- ``injector``: applies one event to the cluster's nodes and heals it.
- ``workload``: the batch and service frameworks as processes, fed jobs.
- ``observer``: samples the leading master's Operator API and the agents'
  containers (their cgroups and processes, read on this host).
- ``invariants``: pure checks over the samples → rows of the report.
- ``report``: the table, the seed and the replay command; JSON.
- ``run``: the loop that ties them together and always tears down.
"""
