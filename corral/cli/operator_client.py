"""The CLI's Operator API client: calls that follow a non-leading master's
redirect to the leader. Apart from corral/cli/views.py so that a command
that only calls (``corral run`` asking whether its task can ever fit) does
not import the tables and formats of the views."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from corral.cli.discovery import client_credentials, leader_address
from corral.detector import leader_from_error
from corral.proto import operator_pb2_grpc
from corral.transport import Credentials, make_sync_channel

TIMEOUT_S = 10.0


class OperatorClient:
    """Operator calls that follow a non-leading master's redirect once, on one
    channel per address (a command's lookups and its call share a connection)."""

    def __init__(self, master: str, credentials: Credentials | None = None) -> None:
        self.credentials = credentials or client_credentials(master)
        self.address = leader_address(master)
        self._stubs: dict[str, operator_pb2_grpc.OperatorStub] = {}

    def _stub(self) -> operator_pb2_grpc.OperatorStub:
        stub = self._stubs.get(self.address)
        if stub is None:
            stub = operator_pb2_grpc.OperatorStub(make_sync_channel(self.address, self.credentials))
            self._stubs[self.address] = stub
        return stub

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(request: object, timeout: float = TIMEOUT_S) -> Any:
            for _ in range(2):
                try:
                    return getattr(self._stub(), method)(request, timeout=timeout)
                except grpc.RpcError as e:
                    leader = leader_from_error(e)
                    if leader is None or leader == self.address:
                        raise
                    self.address = leader
            return getattr(self._stub(), method)(request, timeout=timeout)

        return call


def operator_stub(master: str, credentials: Credentials | None = None) -> OperatorClient:
    """An Operator API client for ``master`` that follows a redirect to the leader
    (``credentials``: default, the CLI's for that master)."""
    return OperatorClient(master, credentials)
