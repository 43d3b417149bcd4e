"""The master's domain values: what it knows of tasks, agents, frameworks and offers.

Being converted from the wire's protobuf messages kind by kind (issue 17):
a name here that is still an alias of a protobuf type is a kind not yet
converted; ``master/wire.py`` converts the others at the edge.
"""

from __future__ import annotations

from typing import TypeAlias

from corral.proto import messages_pb2 as pb

MasterInfo: TypeAlias = pb.MasterInfo
AgentInfo: TypeAlias = pb.AgentInfo
FrameworkInfo: TypeAlias = pb.FrameworkInfo
TaskInfo: TypeAlias = pb.TaskInfo
TaskStatus: TypeAlias = pb.TaskStatus
Offer: TypeAlias = pb.Offer
