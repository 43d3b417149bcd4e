"""corral: a two-level datacenter resource scheduler in the style of Apache Mesos."""

import os

# The agent forks a supervisor per container from a process that runs grpc.aio.
# grpc's fork handlers (on by default) break such children, so turn them off
# before grpc is first imported; corral never uses grpc in a forked child.
# See docs/architecture.md, "Fork and gRPC".
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

__version__ = "0.1.0"
