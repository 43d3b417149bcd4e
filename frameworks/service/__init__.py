"""The bundled service framework: keep N healthy instances of a command
running, spread over agents, with rolling updates and automatic rollback."""

from corral.frameworks.service.engine import ServiceEngine, UnknownServiceError
from corral.frameworks.service.spec import ServiceSpec, ServiceSpecError, load_service, parse_service

__all__ = [
    "ServiceEngine",
    "ServiceSpec",
    "ServiceSpecError",
    "UnknownServiceError",
    "load_service",
    "parse_service",
]
