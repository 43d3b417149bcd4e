"""Who is calling: the principal of a gRPC call.

Every call the master serves carries a principal (issue 14). With mutual TLS
it is taken from the client certificate, which corral's CA issues with the
subject common name ``KIND:NAME`` (``agent:node-1``, ``framework:batch``,
``operator:alice``; see corral/pki.py). Without TLS (loopback, tests, or
``--insecure``) nothing is authenticated: a client may *claim* a principal in
the ``corral-principal`` metadata key, as Mesos trusts ``FrameworkInfo.principal``
when framework authentication is off, and the principal is marked
``authenticated=False`` so the master can tell the two apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import grpc.aio

Kind = Literal["agent", "framework", "operator", "master", "anonymous"]
KINDS: tuple[Kind, ...] = ("agent", "framework", "operator", "master")

#: metadata key in which an unauthenticated client claims its principal
PRINCIPAL_METADATA_KEY = "corral-principal"

#: a principal's name: printable, no spaces, short (it appears in logs and ACLs)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@/-]{0,127}")


@dataclass(frozen=True)
class Principal:
    """A caller: its kind, its name, and whether a certificate proved it."""

    kind: Kind
    name: str
    authenticated: bool = False

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @classmethod
    def parse(cls, text: str, *, authenticated: bool = False) -> Principal:
        """``KIND:NAME`` → a principal; ValueError naming the problem otherwise."""
        kind, sep, name = text.partition(":")
        if not sep:
            raise ValueError(f"principal {text!r}: expected KIND:NAME, e.g. operator:alice")
        if kind not in KINDS:
            raise ValueError(f"principal {text!r}: kind must be one of {', '.join(KINDS)}")
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"principal {text!r}: the name must be 1-128 characters of letters, digits and ._@/-"
            )
        return cls(kind, name, authenticated)


ANONYMOUS = Principal("anonymous", "anonymous")


def _first(values: Any) -> str:
    if not values:
        return ""
    value = values[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def principal_of(context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
    """The principal of the call ``context`` serves.

    A TLS peer's certificate decides (its common name, ``KIND:NAME``); a
    certificate whose name is not of that form is the anonymous principal,
    authenticated (so it can be told apart and refused). A plaintext peer is
    whatever it claims in ``corral-principal``, unauthenticated, or anonymous.
    """
    # grpcio 1.85's auth context of a TLS peer (checked on real handshakes in
    # tests/integration/test_tls.py): transport_security_type [b"ssl"],
    # x509_common_name [b"KIND:NAME"], x509_subject, x509_pem_cert, ...
    auth = context.auth_context()
    if _first(auth.get("transport_security_type")) == "ssl":
        common_name = _first(auth.get("x509_common_name"))
        try:
            return Principal.parse(common_name, authenticated=True)
        except ValueError:
            return Principal("anonymous", common_name or "anonymous", authenticated=True)
    for key, value in context.invocation_metadata() or ():
        if key == PRINCIPAL_METADATA_KEY:
            try:
                return Principal.parse(value if isinstance(value, str) else value.decode())
            except ValueError:
                return ANONYMOUS
    return ANONYMOUS
