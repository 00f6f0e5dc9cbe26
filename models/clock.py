"""Time as an input: every deadline decision takes `now` from a Clock passed in by the caller."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class VirtualClock:
    """A clock that only moves when told to, and never backwards (replay and tests)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start time")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance_to(self, moment: datetime) -> datetime:
        """Move forward to `moment`; a moment in the past leaves the clock where it is."""
        if moment > self._now:
            self._now = moment
        return self._now
