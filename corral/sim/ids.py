"""Seeded ids: what ``uuid4`` gives the real processes, drawn from the seed."""

from __future__ import annotations

import random


class Ids:
    """Hex ids and 16-byte uuids from one seeded stream."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"ids-{seed}")

    def hex(self, digits: int = 32) -> str:
        return f"{self._rng.getrandbits(digits * 4):0{digits}x}"

    def prefixed(self, prefix: str) -> str:
        """The shape of ``corral.master.master.new_id``."""
        return f"{prefix}{self.hex(16)}"

    def uuid(self) -> bytes:
        return self._rng.getrandbits(128).to_bytes(16, "big")
