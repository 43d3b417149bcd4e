"""Authorization: asked once before any call touches state.

Allow-all until ACLs arrive (DESIGN.md, "Security"); callers already pass the
principal and the action so adding ACLs changes only this module.
"""

from __future__ import annotations


def authorize(principal: str, action: str, target: str = "") -> bool:
    """Whether ``principal`` may do ``action`` (e.g. ``"teardown"``) on ``target``."""
    del principal, action, target
    return True
