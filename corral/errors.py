"""Exceptions of corral. Expected outcomes are values (statuses, errors lists);
exceptions are for bugs, I/O and refusals a caller must handle.

    CorralError
    ├── SubscribeError, NotConnectedError   (corral.frameworks.driver)
    ├── ClusterNotFoundError                (corral.cli: no master to talk to)
    ├── ContainerError                      (corral.slave.containerizer)
    └── CallError                           (corral.master: a refused call, with its gRPC code)
"""


class CorralError(Exception):
    """Base of corral's own exceptions."""


class CallError(CorralError):
    """A framework or operator call that cannot be carried out.

    ``code`` is the gRPC status name the transport should answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
