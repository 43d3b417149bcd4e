"""Task.user_namespace reaches ContainerInfo with presence: unset leaves the
agent's default (--user-namespaces) in force, False refuses it, True asks."""

from __future__ import annotations

from corral.frameworks import Task
from corral.proto import messages_pb2 as pb
from corral.resources import Resources


def _container(user_namespace: bool | None) -> pb.ContainerInfo:
    task = Task("t", "true", Resources.of(cpus=0.1, mem=32), user_namespace=user_namespace)
    return task.to_proto("a1").container


def test_unset_is_the_agents_default() -> None:
    assert not _container(None).HasField("user_namespace")


def test_true_and_false_are_sent() -> None:
    on, off = _container(True), _container(False)
    assert on.HasField("user_namespace")
    assert on.user_namespace
    assert off.HasField("user_namespace")
    assert not off.user_namespace
