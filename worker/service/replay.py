"""`slatimer replay`: run an event log through the real handlers on a virtual clock.

The clock advances to each event's `occurred_at` (never backwards). Before an event is handled,
every clock due strictly before it fires, in due order; the event itself then re-judges its order
at its own time, so an obligation met exactly at its deadline is on time, not a violation that is
then withdrawn. After the last event the clock advances to `until` and the rest fire.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from multiprocessing import get_context
from typing import Any

import structlog

from models.clock import VirtualClock
from models.events import (
    AnnouncementPublished,
    ClosureDeclared,
    ContractError,
    Event,
    parse_event,
)
from models.outcomes import Outcome
from models.policy import Policy
from store.base import DueDeadline, UnitOfWork
from store.memory import MemoryUnitOfWork
from worker.service.handlers import fire_deadline, record_broadcast, record_event
from worker.service.partition import (
    Item,
    Line,
    Part,
    merge,
    misguessed,
    numbered_lines,
    scan,
    split,
)

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
            self._record(event, now)
            self.uow.commit()
        self.result.events += 1

    def _record(self, event: Event, now: datetime) -> None:
        self.result.outcomes += record_event(event, self.uow, now, self.policy)

    def fire_until(self, until: datetime) -> None:
        """Fire every clock due at or before `until`, in due order, each at its own time."""
        assert self.clock is not None
        while due := self._due(until):
            for deadline in due:
                now = self.clock.advance_to(deadline.due_at)
                with self.uow:
                    self._fire(deadline, now)
                    self.uow.commit()

    def _fire(self, deadline: DueDeadline, now: datetime) -> None:
        self.result.outcomes += fire_deadline(deadline, self.uow, now, self.policy)

    def _due(self, until: datetime) -> list[DueDeadline]:
        with self.uow:
            return self.uow.deadlines.due(until, BATCH)

    def finish(self, until: datetime | None = None) -> ReplayResult:
        if self.clock is not None:
            self.fire_until(until or self.clock.now())
        return self.result


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
def _errors_only(quiet: bool) -> Iterator[None]:
    saved = structlog.get_config()
    if quiet:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    try:
        yield
    finally:
        structlog.configure(**saved)


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


SMALL_LOG = 5000
"""Lines below which `replay_jobs` replays in one process: forking, splitting and merging a
smaller log cost more than the other cores save."""
END = sys.maxsize
"""The step of the clocks fired after the last line (`until`)."""


def replay_jobs(
    lines: Iterable[str | bytes],
    policy: Policy,
    until: datetime | None = None,
    jobs: int | None = None,
    min_lines: int | None = None,
) -> ReplayResult:
    """`replay_lines` with the log split by merchant over `jobs` processes (default: one per
    core): the same result, outcome for outcome and in the same order (see `partition`). A
    log shorter than `min_lines` (default `SMALL_LOG`), or one that cannot be split exactly,
    replays in one."""
    lines = list(lines)
    jobs = jobs or os.cpu_count() or 1
    small = len(lines) < (SMALL_LOG if min_lines is None else min_lines)
    scanned = None if jobs == 1 or small else scan(lines, jobs)
    if scanned is None:
        return replay_lines(lines, policy, until)
    with no_full_collections():
        parts = _replay_parts(scanned, jobs, policy, until)
        parsed = misguessed(scanned, parts)
        if parsed is not None:  # a line parsed otherwise than the split guessed: now it knows
            scanned = scan(lines, jobs, parsed)
            if scanned is None:
                return replay_lines(lines, policy, until)
            parts = _replay_parts(scanned, jobs, policy, until)
        outcomes, errors, events = merge(parts)
    return ReplayResult(outcomes, errors, events)


def _replay_parts(
    lines: list[Line], jobs: int, policy: Policy, until: datetime | None
) -> list[Part]:
    """Part 0 replays here while forked processes replay the others."""
    work = split(lines, jobs)
    with ProcessPoolExecutor(max(1, len(work) - 1), mp_context=get_context("fork")) as pool:
        others = [pool.submit(replay_part, part, policy, until, True) for part in work[1:]]
        first = replay_part(work[0], policy, until)
        return [first, *(future.result() for future in others)]


def replay_part(
    work: list[Item], policy: Policy, until: datetime | None = None, quiet: bool = False
) -> Part:
    """Replay one part's lines, moving the clock for the other parts' lines, and tag each
    outcome with the step that made it. `quiet` drops warnings: a platform-wide event's
    (every part handles it) is logged by part 0 alone."""
    replayer = _PartReplayer(policy)
    with no_full_collections(), _errors_only(quiet):
        for number, item in work:
            replayer.number = number
            if isinstance(item, datetime):
                replayer.tick(item)
            else:
                replayer.handle(number, item)
        replayer.number = END
        replayer.finish(until)
    return replayer.part


class _PartReplayer(Replayer):
    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.part = Part()
        self.number = 0

    def tick(self, at: datetime) -> None:
        """Another part's line: fire this part's clocks due before it, then move the clock."""
        if self.clock is None:
            self.clock = VirtualClock(at)
        self.fire_until(at - JUST_BEFORE)
        self.clock.advance_to(at)

    def handle(self, number: int, line: bytes) -> None:
        try:
            event = parse_event(line)
        except ContractError as error:
            self.part.parsed[number] = None
            self.part.errors[number] = f"line {number}: {error}"
            return
        self.part.parsed[number] = event.occurred_at
        try:
            self.feed(event)
        except ContractError as error:
            self.part.errors[number] = f"line {number}: {error}"
            return
        if isinstance(event, AnnouncementPublished | ClosureDeclared):
            self.part.platform_events += 1
        else:
            self.part.events += 1

    def _record(self, event: Event, now: datetime) -> None:
        if isinstance(event, AnnouncementPublished | ClosureDeclared):
            for stream, made in record_broadcast(event, self.uow, now, self.policy):
                self._tag(1, stream, made)
        else:
            self._tag(1, "", record_event(event, self.uow, now, self.policy))

    def _fire(self, deadline: DueDeadline, now: datetime) -> None:
        self._tag(0, deadline.rank, fire_deadline(deadline, self.uow, now, self.policy))

    def _tag(self, phase: int, group: Any, made: list[Outcome]) -> None:
        outcomes = self.part.outcomes
        for outcome in made:
            outcomes.append(((self.number, phase, group, len(outcomes)), outcome))
