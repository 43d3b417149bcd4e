"""The master's settings (flags of ``corral master``), shared by the runtime and the core."""

from __future__ import annotations

from dataclasses import dataclass

from corral.master.rate_limit import DEFAULT_FRAMEWORK_RATE_LIMITS, DEFAULT_SUBSCRIBE_RATE_LIMITS, RateLimits


@dataclass(frozen=True)
class MasterConfig:
    allocation_interval_s: float = 1.0
    #: after a change that frees resources, allocate this soon (batches bursts)
    allocation_batch_s: float = 0.005
    offer_timeout_s: float = 30.0
    default_refuse_s: float = 5.0
    agent_heartbeat_interval_s: float = 5.0
    agent_heartbeat_misses: int = 3
    framework_heartbeat_interval_s: float = 15.0
    read_file_timeout_s: float = 5.0
    read_file_default_length: int = 64 * 1024
    read_file_max_length: int = 1024 * 1024
    #: After a master starts, agents have this long to re-register with their
    #: tasks; until then "unknown task" is not an answer it can give.
    agent_reregister_timeout_s: float = 30.0
    #: An agent unreachable this long is gone: its tasks are reported GONE and
    #: it must come back as a new agent.
    agent_gone_timeout_s: float = 600.0
    #: At most max(1, this fraction of the agents) are marked unreachable
    #: within any agent_unreachable_window_s (see master/liveness.py).
    agent_unreachable_fraction: float = 0.1
    agent_unreachable_window_s: float = 60.0
    #: An ACCEPT with more tasks is refused whole, before any is looked at
    #: (one of 100,000 stalled the master for 5 s; see master/validation.py).
    max_tasks_per_accept: int = 1000
    #: frameworks one authenticated principal may have registered at once:
    #: each one lives in the registry for its failover timeout, and many
    #: zero-share frameworks in one role would hoard offers
    max_frameworks_per_principal: int = 1000
    #: Per-principal token buckets (master/rate_limit.py) on scheduler calls
    #: after SUBSCRIBE, and on SUBSCRIBE itself (dearer: it may rescind and
    #: re-offer). On by default; see docs/architecture.md, "Limits".
    #: Request size caps below the transport's 64 MiB (which an agent's
    #: re-registration with thousands of task descriptions may need): a
    #: scheduler call (an ACCEPT at the task cap with 8 KiB tasks is 8 MiB)
    #: and an operator request (ids and a few resources). Checked on the raw
    #: bytes before parsing (corral/malformed.py); over it is INVALID_ARGUMENT.
    max_call_bytes: int = 16 * 1024 * 1024
    max_operator_request_bytes: int = 1024 * 1024
    framework_rate_limits: RateLimits = DEFAULT_FRAMEWORK_RATE_LIMITS
    subscribe_rate_limits: RateLimits = DEFAULT_SUBSCRIBE_RATE_LIMITS
