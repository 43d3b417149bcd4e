"""What an agent knows of image registries: credentials, and which hosts
speak plain HTTP (``corral agent --registry-config FILE``).

Kept apart from the client (registry.py) so that reading an agent's
configuration does not import an HTTP library.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.slave.containerizer.images.errors import ImageError


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class RegistryConfig:
    """What the agent knows of registries (``corral agent --registry-config FILE``)."""

    credentials: Mapping[str, RegistryAuth] = field(default_factory=dict)
    #: hosts spoken to over plain HTTP (loopback registries always are, as Docker does)
    insecure: frozenset[str] = frozenset()
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5

    def scheme(self, registry: str) -> str:
        host = (
            registry.rsplit(":", 1)[0]
            if not registry.startswith("[")
            else registry[1:].split("]", maxsplit=1)[0]
        )
        if registry in self.insecure or host in self.insecure or host == "localhost":
            return "http"
        try:
            return "http" if ipaddress.ip_address(host).is_loopback else "https"
        except ValueError:
            return "https"

    @classmethod
    def load(cls, path: Path) -> RegistryConfig:
        """A TOML file: ``[registries."HOST[:PORT]"]`` tables with ``username``,
        ``password`` and ``insecure = true`` (plain HTTP). It holds passwords,
        so a file others can read is refused."""
        try:
            if path.stat().st_mode & 0o077:
                raise ImageError(f"--registry-config {path}: readable by others; chmod 600 it")
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ImageError(f"--registry-config {path}: {e.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ImageError(f"--registry-config {path}: not valid TOML: {e}") from None
        registries = data.get("registries", {})
        unknown = set(data) - {"registries"}
        if unknown or not isinstance(registries, dict):
            raise ImageError(f'--registry-config {path}: expected only [registries."HOST"] tables')
        creds: dict[str, RegistryAuth] = {}
        insecure = set()
        for host, table in registries.items():
            if not isinstance(table, dict) or set(table) - {"username", "password", "insecure"}:
                raise ImageError(
                    f"--registry-config {path}: [registries.{host!r}] takes username, password, insecure"
                )
            if ("username" in table) != ("password" in table):
                raise ImageError(
                    f"--registry-config {path}: [registries.{host!r}] needs both username and password"
                )
            if "username" in table:
                creds[host] = RegistryAuth(str(table["username"]), str(table["password"]))
            if table.get("insecure") is True:
                insecure.add(host)
        return cls(credentials=creds, insecure=frozenset(insecure))
