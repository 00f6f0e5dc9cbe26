"""`slatimer replay`: run an event log through the real handlers on a virtual clock.

The clock advances to each event's `occurred_at` (never backwards). Before an event is handled,
every clock due strictly before it fires, in due order; the event itself then re-judges its order
at its own time, so an obligation met exactly at its deadline is on time, not a violation that is
then withdrawn. After the last event the clock advances to `until` and the rest fire.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from models.clock import VirtualClock
from models.events import ContractError, Event, parse_event
from models.outcomes import Outcome
from models.policy import Policy
from store.base import DueDeadline, UnitOfWork
from store.memory import MemoryUnitOfWork
from worker.service.handlers import fire_deadline, record_event

BATCH = 1000
JUST_BEFORE = timedelta(microseconds=1)


@dataclass
class ReplayResult:
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    events: int = 0

    def in_order(self) -> list[Outcome]:
        """Outcomes in order of `at` (stable: same-time outcomes keep the order they were made)."""
        return sorted(self.outcomes, key=lambda outcome: outcome.at)

    def points_by_merchant(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for outcome in self.outcomes:
            if outcome.points and outcome.merchant_id:
                totals[outcome.merchant_id] = totals.get(outcome.merchant_id, 0) + outcome.points
        return dict(sorted(totals.items()))


class Replayer:
    """Drives the handlers with a virtual clock; `uow` defaults to a fresh in-memory store."""

    def __init__(self, policy: Policy, uow: UnitOfWork | None = None) -> None:
        self.policy = policy
        self.uow: UnitOfWork = MemoryUnitOfWork() if uow is None else uow
        self.clock: VirtualClock | None = None
        self.result = ReplayResult()

    def feed(self, event: Event) -> None:
        """Handle one event at its own time, after every clock due before it has fired."""
        if self.clock is None:
            self.clock = VirtualClock(event.occurred_at)
        self.fire_until(event.occurred_at - JUST_BEFORE)
        now = self.clock.advance_to(event.occurred_at)
        with self.uow:
            self.result.outcomes += record_event(event, self.uow, now, self.policy)
            self.uow.commit()
        self.result.events += 1

    def fire_until(self, until: datetime) -> None:
        """Fire every clock due at or before `until`, in due order, each at its own time."""
        assert self.clock is not None
        while due := self._due(until):
            for deadline in due:
                now = self.clock.advance_to(deadline.due_at)
                with self.uow:
                    self.result.outcomes += fire_deadline(deadline, self.uow, now, self.policy)
                    self.uow.commit()

    def _due(self, until: datetime) -> list[DueDeadline]:
        with self.uow:
            return self.uow.deadlines.due(until, BATCH)

    def finish(self, until: datetime | None = None) -> ReplayResult:
        if self.clock is not None:
            self.fire_until(until or self.clock.now())
        return self.result


def numbered_lines(lines: Iterable[str | bytes]) -> Iterator[tuple[int, str | bytes]]:
    """Non-blank lines with their 1-based line numbers, for `line N: reason` errors."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line


def replay_lines(
    lines: Iterable[str | bytes],
    policy: Policy,
    until: datetime | None = None,
    uow: UnitOfWork | None = None,
) -> ReplayResult:
    """Replay a JSON-lines event log; bad lines are reported and skipped, the rest still run."""
    replayer = Replayer(policy, uow)
    with no_full_collections():
        for number, line in numbered_lines(lines):
            try:
                replayer.feed(parse_event(line))
            except ContractError as error:
                replayer.result.errors.append(f"line {number}: {error}")
        return replayer.finish(until)


@contextmanager
def no_full_collections() -> Iterator[None]:
    """Replay keeps every state, deadline and outcome alive to the end, so each full (oldest
    generation) garbage collection walks a heap that only grows (15% of a 100k-event replay's
    CPU), and the young ones, run every 700 allocations, found almost nothing to free (10%).
    Young generations are still collected, every 100,000 allocations (they free the few
    short-lived cycles); the oldest is left until the replay ends."""
    threshold = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1_000_000_000)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _identity(line: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(line[k] for k in ("order_id", "kind", "rule", "subject", "at"))


def compare_results(old: ReplayResult, new: ReplayResult) -> list[dict[str, Any]]:
    """What changes from `old` to `new`: each outcome added or removed (same order, kind,
    rule, subject and time; a changed severity or points is a removal and an addition), then
    points per merchant where they differ."""
    before = {_identity(o.as_json()): o.as_json() for o in old.in_order()}
    after = {_identity(o.as_json()): o.as_json() for o in new.in_order()}
    changes: list[dict[str, Any]] = [
        {"change": "removed", **line} for key, line in before.items() if after.get(key) != line
    ]
    changes += [
        {"change": "added", **line} for key, line in after.items() if before.get(key) != line
    ]
    old_points, new_points = old.points_by_merchant(), new.points_by_merchant()
    for merchant in sorted(set(old_points) | set(new_points)):
        was, now = old_points.get(merchant, 0), new_points.get(merchant, 0)
        if was != now:
            changes.append(
                {
                    "change": "points",
                    "merchant_id": merchant,
                    "old": was,
                    "new": now,
                    "delta": now - was,
                }
            )
    return changes
