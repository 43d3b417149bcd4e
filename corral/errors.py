"""Exceptions of corral. Expected outcomes are values (statuses, errors lists);
exceptions are for bugs, I/O and refusals a caller must handle.

    CorralError
    ├── SubscribeError, NotConnectedError   (corral.frameworks.driver)
    ├── ClusterNotFoundError                (corral.cli: no master to talk to)
    └── ContainerError                      (corral.slave.containerizer)
"""


class CorralError(Exception):
    """Base of corral's own exceptions."""
