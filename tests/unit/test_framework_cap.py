"""A principal's frameworks are bounded (a security review: each lives in the
registry for its failover timeout, and many zero-share ones hoard offers)."""

from __future__ import annotations

import pytest

from corral.errors import CallError
from corral.master.master import Master, MasterConfig
from corral.master.streams import Outbox
from corral.proto import messages_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_principal_registers_at_most_its_cap_of_frameworks() -> None:
    master = Master(MasterConfig(max_frameworks_per_principal=2), clock=Clock())
    first = master.subscribe(pb.FrameworkInfo(name="a1"), Outbox(), principal="framework:a")
    master.subscribe(pb.FrameworkInfo(name="a2"), Outbox(), principal="framework:a")
    with pytest.raises(CallError, match="principal framework:a already has 2 frameworks") as err:
        master.subscribe(pb.FrameworkInfo(name="a3"), Outbox(), principal="framework:a")
    assert err.value.code == "RESOURCE_EXHAUSTED"
    # Another principal is not held back, and a re-subscription by id is not a new framework.
    master.subscribe(pb.FrameworkInfo(name="b1"), Outbox(), principal="framework:b")
    again = pb.FrameworkInfo(name="a1", id=first.framework_id)
    assert master.subscribe(again, Outbox(), principal="framework:a").framework_id == first.framework_id
    assert len(master.state.frameworks) == 3
