"""Suppress offers while a framework has nothing to launch, revive when it has.

DESIGN.md asks a polite framework to stop the flow of offers when idle; this
keeps track of whether it did, so it calls the driver only on a change::

    interest = OfferInterest()
    ...
    interest.update(driver, wants_offers=bool(pending))

After (re-)subscribing call :meth:`OfferInterest.sync`: whether the master
still holds the framework suppressed (the same master after a reconnect) or
not (a new leader), it is told the current wish explicitly.
"""

from __future__ import annotations

from corral.errors import NotConnectedError
from corral.frameworks.driver import SchedulerDriver


class OfferInterest:
    """Whether offers are suppressed, and the calls to change it."""

    def __init__(self) -> None:
        self.suppressed = False

    def reset(self) -> None:
        """Forget the last call (the next :meth:`update` that wants offers does not revive)."""
        self.suppressed = False

    def sync(self, driver: SchedulerDriver, wants_offers: bool) -> None:
        """Send the current wish whatever was sent before (after subscribing)."""
        self.suppressed = wants_offers
        self.update(driver, wants_offers)

    def update(self, driver: SchedulerDriver, wants_offers: bool) -> None:
        """Suppress when nothing is wanted, revive when something is; only on a change.
        Does nothing while the driver is not connected (the next subscription resets)."""
        try:
            if wants_offers and self.suppressed:
                driver.revive()
                self.suppressed = False
            elif not wants_offers and not self.suppressed:
                driver.suppress()
                self.suppressed = True
        except NotConnectedError:
            pass
