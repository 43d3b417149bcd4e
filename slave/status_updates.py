"""At-least-once delivery of task status updates, in order per task.

Every update gets a uuid and waits in its task's queue. Only the head of each
queue is in flight; it is resent with exponential backoff until the framework's
acknowledgement comes back through the master, then the next one goes. That is
Mesos' status update manager: retries may duplicate, never reorder, and the
uuid lets a framework drop duplicates. A :class:`Journal` checkpoints every
update before it is sent and every acknowledgement before the next update
goes, so a restarted agent restores the queues (:meth:`~StatusUpdateManager.restore`)
and delivery stays at-least-once across restarts (see slave/checkpoints.py).

The round trip of an update (for the agent's metrics) is the time from its
first send by this process to its acknowledgement, retries and
disconnections included: what a framework waits for, as the agent sees it.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from corral.proto import messages_pb2 as pb

TaskKey = tuple[str, str]  # (framework_id, task_id)

#: First and longest wait before an unacknowledged update goes again (Mesos'
#: 10 s minimum). Retries are the rare path: a reconnection resends every
#: head at once, and the master re-sends what a re-subscribing framework has
#: not acknowledged. At 2 s, a burst whose acks took longer than that came
#: back as duplicates (13,086 updates received for 9,000) that made the
#: burst longer still.
RETRY_MIN_S = 10.0
RETRY_MAX_S = 600.0


class Journal(Protocol):
    """Where updates and acknowledgements are checkpointed, in the order they happen."""

    def updated(self, status: pb.TaskStatus) -> None: ...

    def acknowledged(self, key: TaskKey, uuid: bytes) -> None: ...


@dataclass
class _Stream:
    queue: deque[pb.TaskStatus] = field(default_factory=deque)
    next_retry: float = 0.0
    backoff: float = 0.0
    #: when the head first went out (None: not yet)
    sent_at: float | None = None


class StatusUpdateManager:
    def __init__(
        self,
        send: Callable[[list[pb.TaskStatus]], bool],
        *,
        initial_backoff_s: float = RETRY_MIN_S,
        max_backoff_s: float = RETRY_MAX_S,
        journal: Journal | None = None,
        new_uuid: Callable[[], bytes] = lambda: uuid.uuid4().bytes,
        observe_round_trip: Callable[[float], None] | None = None,
    ) -> None:
        """``send`` forwards updates to the master and says whether it could
        (False while disconnected; they are resent on :meth:`resend_all`).
        ``new_uuid``: the simulation (corral.sim) passes a seeded one.
        ``observe_round_trip`` is told each acknowledged update's round trip
        in seconds (see the module docstring)."""
        self._send = send
        self._observe_round_trip = observe_round_trip
        self._new_uuid = new_uuid
        self._streams: dict[TaskKey, _Stream] = {}
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.journal = journal

    def update(self, status: pb.TaskStatus, now: float) -> pb.TaskStatus:
        """Queue a new update (a uuid is assigned) and send it if it is the head."""
        status.uuid = self._new_uuid()
        key = (status.framework_id, status.task_id)
        if self.journal is not None:
            self.journal.updated(status)  # before it can be sent
        stream = self._streams.setdefault(key, _Stream())
        stream.queue.append(status)
        if len(stream.queue) == 1:
            self._transmit([key], now)
        return status

    def acknowledge(self, key: TaskKey, ack_uuid: bytes, now: float) -> pb.TaskStatus | None:
        """Drop the head if ``ack_uuid`` matches it and send the next one.
        Returns the acknowledged update; a stale or duplicate ack returns None."""
        stream = self._streams.get(key)
        if stream is None or not stream.queue or stream.queue[0].uuid != ack_uuid:
            return None
        if self.journal is not None:
            self.journal.acknowledged(key, ack_uuid)
        acked = stream.queue.popleft()
        if self._observe_round_trip is not None and stream.sent_at is not None and now >= stream.sent_at:
            self._observe_round_trip(now - stream.sent_at)
        stream.sent_at = None
        if stream.queue:
            stream.backoff = 0.0
            self._transmit([key], now)
        else:
            del self._streams[key]
        return acked

    def restore(self, key: TaskKey, pending: list[pb.TaskStatus]) -> None:
        """Queue checkpointed updates (uuids kept) that were not acknowledged;
        they go out at the next :meth:`resend_all`."""
        if pending:
            stream = self._streams.setdefault(key, _Stream())
            stream.queue.extend(pending)
            stream.next_retry = float("inf")

    def tick(self, now: float) -> None:
        """Resend heads whose retry time has come."""
        due = [k for k, s in self._streams.items() if s.queue and s.next_retry <= now]
        if due:
            self._transmit(due, now)

    def resend_all(self, now: float) -> None:
        """After a (re)connection: every head goes again at once."""
        for stream in self._streams.values():
            stream.backoff = 0.0
        self._transmit(list(self._streams), now)

    def pending(self) -> dict[TaskKey, list[pb.TaskStatus]]:
        return {k: list(s.queue) for k, s in self._streams.items()}

    def latest(self, key: TaskKey) -> pb.TaskStatus | None:
        stream = self._streams.get(key)
        return stream.queue[-1] if stream and stream.queue else None

    def forget_framework(self, framework_id: str) -> None:
        for key in [k for k in self._streams if k[0] == framework_id]:
            del self._streams[key]

    def _transmit(self, keys: list[TaskKey], now: float) -> None:
        heads = [self._streams[k].queue[0] for k in keys]
        sent = self._send(heads)
        for key in keys:
            stream = self._streams[key]
            if sent:
                if stream.sent_at is None:
                    stream.sent_at = now
                stream.backoff = min(self.max_backoff_s, (stream.backoff * 2) or self.initial_backoff_s)
                stream.next_retry = now + stream.backoff
            else:
                stream.next_retry = float("inf")  # until resend_all on reconnect
