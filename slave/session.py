"""The agent's session with the master, as a small state machine. Pure.

The runtime (slave/agent.py) dials, reads the stream and sleeps; this module
decides: how long to wait before the next dial (exponential backoff from
``reconnect_min_s`` doubling to ``reconnect_max_s``, back to the minimum after
a session that got registered), when a heartbeat is due (every interval the
master gave at registration, 5 s by default), and what a session's end means
(:func:`outcome`: the master refused the agent, declared it gone, or the
connection was lost). Time is passed in; nothing here sleeps or reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_HEARTBEAT_INTERVAL_S = 5.0


class Outcome(enum.Enum):
    """How a session with the master ended."""

    #: the stream broke or the master went away: dial again after the backoff
    LOST = "lost"
    #: the master refused the registration (bad resources or attributes): stop
    REJECTED = "rejected"
    #: the master declared this agent gone: kill its tasks, come back as a new agent
    GONE = "gone"


def outcome(code: str, details: str) -> Outcome:
    """What a session that ended with gRPC status ``code`` (its name) means."""
    if code == "INVALID_ARGUMENT":
        return Outcome.REJECTED
    if code == "FAILED_PRECONDITION" and "is gone" in details:
        return Outcome.GONE
    return Outcome.LOST


@dataclass
class Session:
    """Backoff between dials and the heartbeat schedule of the current session."""

    reconnect_min_s: float = 0.05
    reconnect_max_s: float = 5.0
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    #: registered with a master, so messages can be sent
    connected: bool = False
    _delay_s: float = -1.0
    _last_heartbeat: float = 0.0

    def __post_init__(self) -> None:
        if self._delay_s < 0:
            self._delay_s = self.reconnect_min_s

    def registered(self, heartbeat_interval_s: float) -> None:
        """The master accepted the registration (0: its default interval)."""
        self.heartbeat_interval_s = heartbeat_interval_s or DEFAULT_HEARTBEAT_INTERVAL_S
        self.connected = True

    def ended(self) -> None:
        """The stream is gone."""
        self.connected = False

    def next_delay(self, was_registered: bool) -> float:
        """How long to wait before the next dial, after a session (or a failed
        dial, or no leader found) that was or was not registered."""
        if was_registered:
            self._delay_s = self.reconnect_min_s
        delay = self._delay_s
        self._delay_s = min(self.reconnect_max_s, self._delay_s * 2)
        return delay

    def heartbeat_due(self, now: float) -> bool:
        """Whether to send a heartbeat at ``now`` (then the next is an interval later)."""
        if not self.connected or now - self._last_heartbeat < self.heartbeat_interval_s:
            return False
        self._last_heartbeat = now
        return True
