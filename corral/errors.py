"""Exceptions of corral. Expected outcomes are values (statuses, errors lists);
exceptions are for bugs, I/O and refusals a caller must handle.

    CorralError
    ├── SubscribeError, NotConnectedError, ConnectTimeoutError  (raised by corral.frameworks.driver)
    ├── ClusterNotFoundError                (corral.cli: no master to talk to)
    ├── IdLookupError                       (corral.cli: no object, or several, answer to an id)
    ├── ContainerError                      (corral.slave.containerizer)
    ├── CertificateError                    (corral.pki: a TLS file missing, unreadable, expired, ...)
    ├── ListenError                         (corral.metrics: an address to serve on cannot be bound)
    ├── CallError                           (corral.master: a refused call, with its gRPC code)
    └── ApiError                            (a framework's HTTP API refused a call, or is unreachable)
        └── BatchApiError, ServiceApiError  (corral.frameworks.batch.api, .service.api)
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


class CertificateError(CorralError):
    """A TLS file cannot be used: the message names the file and the problem
    (missing, unreadable, not PEM, key and certificate do not match, expired,
    not signed by the CA)."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


class ApiError(CorralError):
    """A framework's HTTP API refused a request (``status``: the HTTP status it
    answered) or could not be reached (``status`` None). The CLI maps the
    status to its exit code (corral/cli/exit.py)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ListenError(CorralError):
    """An address to serve on cannot be bound (in use, not local, no permission)."""


# The next five are raised by the framework driver and the CLI; they live here
# (and are re-exported where they are raised) so that the CLI's error handling
# can name them without importing grpc and the driver (``corral --help``).


class SubscribeError(CorralError):
    """The master refused the subscription; retrying would not help."""


class NotConnectedError(CorralError):
    """A call was made while the driver has no stream to the master."""


class ConnectTimeoutError(CorralError):
    """The driver did not subscribe within its ``connect_timeout_s``: a wrong
    address, no leader elected, or a master that is down or refuses TLS. The
    CLI exits 3 on it (corral/cli/exit.py: cannot reach the cluster)."""


class ClusterNotFoundError(CorralError):
    """No master address was given and no local cluster is running."""


class IdLookupError(CorralError):
    """No object, or more than one, answers to what the user typed."""
