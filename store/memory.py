"""An in-memory unit of work: the store `slatimer replay` and the fast unit tests run on.

It keeps the same constraints as the SQL schema (unique event ids, one standing violation per
order and category, no outcome key twice) so replay and the runtime agree. Rollback undoes the
transaction's writes from an undo log.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from models.alerts import alert_body, alert_id
from models.calendars import Closure, Interval
from models.events import Event
from models.order import OrderState
from models.outcomes import LedgerEntry, Outcome, OutcomeKey, Recorded
from models.policy import Announcement
from models.rules import Clocked
from store.base import (
    DeadLetter,
    DeadlineState,
    DeadlineView,
    DueDeadline,
    calendar_of,
    deadline_state,
)

Undo = Callable[[], None]
K = TypeVar("K")
V = TypeVar("V")


class IntegrityError(Exception):
    """The in-memory twin of a database constraint violation."""


_MISSING: Any = object()


class _Journal:
    """The transaction's undo log: callables, or (mapping, key, old value) for a plain write
    (a tuple, not a closure: replay writes a few times per event and rolls back never)."""

    def __init__(self) -> None:
        self.undo: list[Undo | tuple[MutableMapping[Any, Any], Any, Any]] = []

    def set(self, mapping: MutableMapping[K, V], key: K, value: V) -> None:
        self.undo.append((mapping, key, mapping.get(key, _MISSING)))
        mapping[key] = value

    def undo_to(self, mark: int) -> None:
        while len(self.undo) > mark:
            step = self.undo.pop()
            if callable(step):
                step()
                continue
            mapping, key, old = step
            if old is _MISSING:
                del mapping[key]
            else:
                mapping[key] = old


class MemoryInbox:
    """Event ids and digests: what tells a redelivery from a reused id. The events themselves
    are not kept (nothing reads them back, and a million of them took gigabytes in replay)."""

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal
        self.digests: dict[str, str] = {}

    def digest_of(self, event_id: str) -> str | None:
        return self.digests.get(event_id)

    def add(self, event: Event, digest: str, received_at: datetime) -> None:
        if event.event_id in self.digests:
            raise IntegrityError(f"inbox: duplicate event_id {event.event_id}")
        self._journal.set(self.digests, event.event_id, digest)


class MemoryOrders:
    def __init__(self, journal: _Journal) -> None:
        self._journal = journal
        self.states: dict[str, OrderState] = {}

    def lock(self, order_id: str) -> OrderState:
        return self.states.get(order_id) or OrderState(order_id=order_id)

    def save(self, state: OrderState) -> None:
        self._journal.set(self.states, state.order_id, state)

    def merchant_of(self, order_id: str) -> str | None:
        state = self.states.get(order_id)
        return state.merchant_id if state else None

    def lock_merchant(self, merchant_id: str) -> None:
        """One transaction at a time already: nothing to wait for."""

    def created_between(self, since: datetime, until: datetime) -> list[str]:
        return sorted(
            order_id
            for order_id, state in self.states.items()
            if state.created is not None and since <= state.created.at < until
        )


class MemoryAnnouncements:
    def __init__(self, journal: _Journal) -> None:
        self._journal = journal
        self.by_id: dict[str, Announcement] = {}

    def add(self, announcement: Announcement) -> None:
        self._journal.set(self.by_id, announcement.announcement_id, announcement)

    def all(self) -> tuple[Announcement, ...]:
        return tuple(self.by_id.values())


class MemoryClosures:
    def __init__(self, journal: _Journal) -> None:
        self._journal = journal
        self.by_id: dict[str, Closure] = {}
        self._sorted: tuple[Closure, ...] | None = ()
        """`all()` kept between changes: every reconcile asks for it."""

    def add(self, closure: Closure) -> None:
        self._journal.set(self.by_id, closure.closure_id, closure)
        self._forget()
        self._journal.undo.append(self._forget)

    def _forget(self) -> None:
        self._sorted = None

    def all(self) -> tuple[Closure, ...]:
        if self._sorted is None:
            ordered = sorted(self.by_id.values(), key=lambda c: (c.starts_at, c.closure_id))
            self._sorted = tuple(ordered)
        return self._sorted


class MemoryOutcomes:
    def __init__(self, journal: _Journal) -> None:
        self._journal = journal
        self.by_order: dict[str, dict[OutcomeKey, Recorded]] = defaultdict(dict)
        self.standing_violations: dict[tuple[str, str], list[datetime]] = defaultdict(list)
        """(merchant, category) -> sorted times of standing violations: the severity index."""
        self.merchant_of: dict[str, str | None] = {}
        self.recorded_for: dict[tuple[str, OutcomeKey], str] = {}
        """(order, outcome key) -> the merchant a violation was recorded for: it leaves that
        merchant's standing when withdrawn, though the order may have moved since (as the SQL
        store's outcome row keeps its merchant)."""
        self.log: list[Outcome] = []

    def for_order(self, order_id: str) -> list[Recorded]:
        return list(self.by_order.get(order_id, {}).values())

    def record(self, outcome: Outcome) -> None:
        recorded = outcome.as_recorded()
        existing = self.by_order[outcome.order_id]
        if recorded.key in existing:
            raise IntegrityError(f"outcome {recorded.key} recorded twice")
        if recorded.kind == "violation" and any(
            r.kind == "violation" and r.category == recorded.category and not r.retracted
            for r in existing.values()
        ):
            raise IntegrityError(f"second standing {recorded.category} violation")
        self._journal.set(existing, recorded.key, recorded)
        self._journal.set(self.merchant_of, outcome.order_id, outcome.merchant_id)
        if recorded.kind == "violation" and outcome.merchant_id and recorded.category:
            times = self.standing_violations[(outcome.merchant_id, recorded.category)]
            bisect.insort(times, recorded.at)
            self._journal.undo.append(lambda: times.remove(recorded.at))
            self._journal.set(
                self.recorded_for, (outcome.order_id, recorded.key), outcome.merchant_id
            )
        self._append(outcome)

    def withdraw(self, recorded: Recorded, retraction: Outcome) -> None:
        existing = self.by_order[retraction.order_id]
        current = existing.get(recorded.key)
        if current is None or current.retracted:
            raise IntegrityError(f"nothing standing to withdraw at {recorded.key}")
        self._journal.set(existing, recorded.key, replace(current, retracted=True))
        merchant = self.recorded_for.get((retraction.order_id, recorded.key))
        if merchant and current.kind == "violation" and current.category:
            times = self.standing_violations[(merchant, current.category)]
            times.remove(current.at)
            self._journal.undo.append(lambda: bisect.insort(times, current.at))
        self._append(retraction)

    def any_violation_between(
        self, merchant_id: str, category: str, since: datetime, until: datetime
    ) -> bool:
        times = self.standing_violations.get((merchant_id, category), [])
        first = bisect.bisect_left(times, since)
        return first < len(times) and times[first] < until

    def points_between(
        self, merchant_id: str, category: str, severity: str, since: datetime, until: datetime
    ) -> int:
        return sum(
            r.points or 0
            for order_id, outcomes in self.by_order.items()
            if self.merchant_of.get(order_id) == merchant_id
            for r in outcomes.values()
            if r.kind == "violation"
            and not r.retracted
            and (r.category, r.severity) == (category, severity)
            and since <= r.at < until
        )

    def _append(self, outcome: Outcome) -> None:
        self.log.append(outcome)
        self._journal.undo.append(lambda: self.log.remove(outcome))


DeadlineKey = tuple[str, str, str]
NO_CALENDAR: tuple[str | None, tuple[Interval, ...]] = (None, ())
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
HeapEntry = tuple[int, DeadlineKey, datetime]
"""(due time in epoch microseconds, key, due time): the heap orders by the integer, which
compares several times faster than an aware datetime (a push or pop compares log n times);
the datetime rides along for the row it must match and the bound of a look-up."""


def epoch_micros(moment: datetime) -> int:
    """The instant as whole microseconds since the epoch: exact, and ordered as the instants."""
    return (moment - EPOCH) // MICROSECOND


class MemoryDeadlines:
    """Deadline rows plus a heap of due times; stale heap entries are skipped when popped."""

    def __init__(
        self, journal: _Journal, merchant_of: Callable[[str], str | None] = lambda _: None
    ) -> None:
        self._journal = journal
        self._merchant_of = merchant_of
        self.rows: dict[DeadlineKey, tuple[datetime, DeadlineState]] = {}
        self.enqueued_at: dict[DeadlineKey, datetime] = {}
        self._order_keys: dict[str, set[DeadlineKey]] = defaultdict(set)
        self._heap: list[HeapEntry] = []
        self.calendars: dict[DeadlineKey, tuple[str | None, tuple[Interval, ...]]] = {}
        """Working-time clocks: the calendar in force and the paused stretches."""

    def sync(self, order_id: str, current: Sequence[Clocked], now: datetime) -> None:
        wanted = set()
        indexed = self._order_keys[order_id]  # an index only: a stale key is harmless
        for clock in current:
            rule, subject = clock.slot
            key = (order_id, rule, subject)
            wanted.add(key)
            timing = calendar_of(clock)
            if timing != self.calendars.get(key, NO_CALENDAR):
                self._journal.set(self.calendars, key, timing)
            row = (clock.due_at, deadline_state(clock, now))
            if self.rows.get(key) == row:
                continue
            self._journal.set(self.rows, key, row)
            indexed.add(key)
            if row[1] == "pending":
                heapq.heappush(self._heap, (epoch_micros(clock.due_at), key, clock.due_at))
        if not indexed <= wanted:  # most reconciles keep every clock: nothing to close
            self._close_vanished(order_id, wanted)

    def _close_vanished(self, order_id: str, wanted: set[DeadlineKey]) -> None:
        """A clock whose obligation no longer applies (late evidence removed it) is closed."""
        for key, (due_at, state) in list(self.by_order_rows(order_id)):
            if key not in wanted and state in ("pending", "enqueued"):
                self._journal.set(self.rows, key, (due_at, "met"))

    def by_order_rows(
        self, order_id: str
    ) -> list[tuple[DeadlineKey, tuple[datetime, DeadlineState]]]:
        keys = sorted(self._order_keys.get(order_id, ()))  # the index, not a scan of all rows
        return [(key, self.rows[key]) for key in keys if key in self.rows]

    def open_orders(self, rules: Collection[str]) -> list[str]:
        found = {
            key[0]
            for key, (_, state) in self.rows.items()
            if key[1] in rules and state in ("pending", "enqueued")
        }
        return sorted(found)

    def due_since(self, rules: Collection[str], since: datetime) -> list[str]:
        found = {
            key[0] for key, (due_at, _) in self.rows.items() if key[1] in rules and due_at >= since
        }
        return sorted(found)

    def timeline(self, order_id: str) -> list[DeadlineView]:
        return sorted(
            (
                DeadlineView(key[1], key[2], due_at, state, *self.calendars.get(key, NO_CALENDAR))
                for key, (due_at, state) in self.by_order_rows(order_id)
            ),
            key=lambda view: (view.due_at, view.rule, view.subject),
        )

    def open_of_merchant(
        self, merchant_id: str, rules: Collection[str], until: datetime
    ) -> list[DueDeadline]:
        keys = {key for _, key, _ in self._heap_until(until)}
        keys.update(self.enqueued_at)  # claimed rows left the heap
        found = [
            DueDeadline(*key, due_at=self.rows[key][0])
            for key in keys
            if key in self.rows
            and self.rows[key][1] in ("pending", "enqueued")
            and self.rows[key][0] <= until
            and key[1] in rules
            and self._merchant_of(key[0]) == merchant_id
        ]
        return sorted(found, key=lambda deadline: deadline.rank)

    def _heap_until(self, until: datetime) -> Iterator[HeapEntry]:
        """Heap entries due at or before `until`, without popping: a walk that stops below
        any later entry, so it costs what is overdue (little: replay fires on time), not the
        whole heap."""
        stack = [0] if self._heap else []
        while stack:
            index = stack.pop()
            if self._heap[index][2] > until:  # one comparison: no need to convert `until`
                continue
            yield self._heap[index]
            stack += [child for child in (2 * index + 1, 2 * index + 2) if child < len(self._heap)]

    def is_due(self, deadline: DueDeadline) -> bool:
        key = (deadline.order_id, deadline.rule, deadline.subject)
        return self.rows.get(key) in ((deadline.due_at, "pending"), (deadline.due_at, "enqueued"))

    def claim(self, until: datetime, limit: int, now: datetime) -> list[DueDeadline]:
        claimed = self.due(until, limit)
        for deadline in claimed:
            key = (deadline.order_id, deadline.rule, deadline.subject)
            self._journal.set(self.rows, key, (deadline.due_at, "enqueued"))
            self._journal.set(self.enqueued_at, key, now)
        return claimed

    def requeue_stale(self, due_before: datetime, now: datetime) -> int:
        stale = [
            (key, due_at)
            for key, (due_at, state) in self.rows.items()
            if state == "enqueued" and due_at < due_before and self.enqueued_at[key] < due_before
        ]
        for key, due_at in stale:
            self._journal.set(self.rows, key, (due_at, "pending"))
            heapq.heappush(self._heap, (epoch_micros(due_at), key, due_at))
        return len(stale)

    def due(self, until: datetime, limit: int) -> list[DueDeadline]:
        """Like the SQL store's, it leaves what it returns due until it is fired: the found
        entries go back on the heap (`open_of_merchant` walks it), only stale ones are
        dropped."""
        found: dict[DeadlineKey, HeapEntry] = {}  # a key pushed twice comes once
        # the bound compares the entry's datetime: converting `until` cost more than the one
        # comparison per pop (replay asks once or twice per event, mostly for nothing)
        while self._heap and self._heap[0][2] <= until and len(found) < limit:
            entry = heapq.heappop(self._heap)
            _, key, due_at = entry
            if self.rows.get(key) == (due_at, "pending"):
                found[key] = entry
        for entry in found.values():
            heapq.heappush(self._heap, entry)
        return [DueDeadline(*key, due_at=due_at) for _, key, due_at in found.values()]


class _RunningTotal:
    """Points by time with prefix sums, so a rolling window is two bisections, not a scan of
    every entry (replay asks once per violation: the scan made it quadratic). Entries come
    mostly in time order, so an insertion rarely shifts more than a few sums."""

    def __init__(self) -> None:
        self.times: list[datetime] = []
        self.sums: list[int] = [0]
        """sums[k]: the points of the first k entries by time."""

    def add(self, at: datetime, points: int) -> None:
        index = bisect.bisect_right(self.times, at)
        self.times.insert(index, at)
        self.sums.insert(index + 1, self.sums[index])
        for later in range(index + 1, len(self.sums)):
            self.sums[later] += points

    def remove(self, at: datetime, points: int) -> None:
        """Undo an `add`: entries at the same time are interchangeable to a window query."""
        index = bisect.bisect_left(self.times, at)
        del self.times[index]
        del self.sums[index + 1]
        for later in range(index + 1, len(self.sums)):
            self.sums[later] -= points

    def between(self, since: datetime, until: datetime) -> int:
        """Points of the entries with `since <= at <= until`."""
        first = bisect.bisect_left(self.times, since)
        last = bisect.bisect_right(self.times, until)
        return self.sums[last] - self.sums[first] if last > first else 0


class MemoryLedger:
    def __init__(self, journal: _Journal) -> None:
        self._journal = journal
        self.entries: dict[tuple[str, str, str, datetime, str], LedgerEntry] = {}
        self._by_merchant: dict[str, _RunningTotal] = defaultdict(_RunningTotal)

    def add(self, entry: LedgerEntry) -> None:
        key = (entry.order_id, entry.rule, entry.subject, entry.outcome_at, entry.entry)
        if key in self.entries:
            raise IntegrityError(f"ledger entry {key} twice")
        self._journal.set(self.entries, key, entry)
        running = self._by_merchant[entry.merchant_id]
        running.add(entry.outcome_at, entry.points)
        self._journal.undo.append(lambda: running.remove(entry.outcome_at, entry.points))

    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = defaultdict(int)
        for entry in self.entries.values():
            totals[entry.merchant_id] += entry.points
        return dict(sorted(totals.items()))

    def standing(self, merchant_id: str, since: datetime, until: datetime) -> int:
        running = self._by_merchant.get(merchant_id)
        return running.between(since, until) if running else 0


class MemoryDeadLetters:
    """Dead letters by id; ids are never reused, even when a transaction rolls back (as in SQL)."""

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal
        self.rows: dict[int, DeadLetter] = {}
        self._ids = itertools.count(1)

    def add(self, letter: DeadLetter) -> None:
        letter_id = next(self._ids)
        self._journal.set(self.rows, letter_id, replace(letter, id=letter_id))

    def latest(self, limit: int) -> list[DeadLetter]:
        return [self.rows[key] for key in sorted(self.rows, reverse=True)[:limit]]

    def for_replay(self, ids: Sequence[int] | None, limit: int) -> list[DeadLetter]:
        if ids is None:
            found = [self.rows[key] for key in sorted(self.rows)]
            return [letter for letter in found if letter.replayed_at is None][:limit]
        return [self.rows[key] for key in sorted(set(ids)) if key in self.rows][:limit]

    def mark_replayed(self, ids: Sequence[int], at: datetime) -> None:
        for key in ids:
            self._journal.set(self.rows, key, replace(self.rows[key], replayed_at=at))


class MemoryAlerts:
    """The outbox, in memory: alert id -> body (replay and unit tests need no delivery)."""

    def __init__(self, journal: _Journal) -> None:
        self._journal = journal
        self.bodies: dict[str, dict[str, Any]] = {}

    def add(self, outcome: Outcome, created_at: datetime) -> None:
        if outcome.merchant_id is None:
            return
        identity = alert_id(outcome)
        if identity in self.bodies:
            raise IntegrityError(f"alert {identity} twice")
        self._journal.set(self.bodies, identity, alert_body(outcome))


class MemoryUnitOfWork:
    """All repositories share one journal, so rollback undoes the whole transaction."""

    def __init__(self) -> None:
        self._journal = _Journal()
        self.inbox = MemoryInbox(self._journal)
        self.orders = MemoryOrders(self._journal)
        self.outcomes = MemoryOutcomes(self._journal)
        self.deadlines = MemoryDeadlines(self._journal, self.orders.merchant_of)
        self.ledger = MemoryLedger(self._journal)
        self.alerts = MemoryAlerts(self._journal)
        self.announcements = MemoryAnnouncements(self._journal)
        self.closures = MemoryClosures(self._journal)
        self.dead_letters = MemoryDeadLetters(self._journal)
        self.commits = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()  # a no-op after commit

    def commit(self) -> None:
        self._journal.undo.clear()
        self.commits += 1

    def rollback(self) -> None:
        self._undo_to(0)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        mark = len(self._journal.undo)
        try:
            yield
        except BaseException:
            self._undo_to(mark)
            raise

    @contextmanager
    def batch(
        self,
        order_ids: Sequence[str],
        event_ids: Sequence[str] = (),
        moments: Sequence[datetime] = (),
        merchants_of: Sequence[str] = (),
    ) -> Iterator[MemoryUnitOfWork]:
        """Memory is already as fast as a batch gets: the batch is this unit of work."""
        with self.savepoint():
            yield self

    def _undo_to(self, mark: int) -> None:
        self._journal.undo_to(mark)
