"""The storage ports the service layer depends on; `memory` and `sql` implement them alike."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Literal, Protocol, Self

from models.calendars import Closure
from models.events import Event
from models.order import OrderState
from models.outcomes import LedgerEntry, Outcome, Recorded
from models.policy import Announcement
from models.rules import Clocked

DeadlineState = Literal["pending", "enqueued", "met", "fired"]


class Unisolated(Exception):
    """A batched unit of work cannot undo one message's writes alone: a handler failed after it
    wrote. Roll the batch back and redo it message by message on the plain unit of work."""


@dataclass(frozen=True)
class DueDeadline:
    """A pending clock whose time has come: fire it and re-judge its order."""

    order_id: str
    rule: str
    subject: str
    due_at: datetime
    merchant_id: str | None = field(default=None, compare=False)
    """Known when the dispatcher claims the clock (its timer groups are laid out by merchant);
    not part of the clock's identity, and not sent with the task."""

    @property
    def key(self) -> str:
        """A deadline's id in logs and metrics: one per clock of an order."""
        return f"{self.order_id}/{self.rule}/{self.subject}"

    @property
    def rank(self) -> tuple[datetime, str, str, str]:
        """Where the clock comes in due order: by time, ties by order, rule and subject — the
        order `slatimer replay` fires clocks in, on every store."""
        return (self.due_at, self.order_id, self.rule, self.subject)


@dataclass(frozen=True)
class DeadlineView:
    rule: str
    subject: str
    due_at: datetime
    state: str
    calendar: str | None
    paused: tuple[tuple[datetime, datetime], ...]


def calendar_of(clock: Clocked) -> tuple[str | None, tuple[tuple[datetime, datetime], ...]]:
    """What a timer row keeps of a working-time clock: its calendar and paused stretches."""
    return clock.calendar, clock.paused


def deadline_state(clock: Clocked, now: datetime) -> DeadlineState:
    """Open clocks stay pending; a met one is closed as met; a passed one has fired."""
    if clock.is_open_at(now):
        return "pending"
    return "fired" if clock.breached else "met"


class Inbox(Protocol):
    def digest_of(self, event_id: str) -> str | None: ...
    def add(self, event: Event, digest: str, received_at: datetime) -> None: ...


class Announcements(Protocol):
    def add(self, announcement: Announcement) -> None: ...
    def all(self) -> tuple[Announcement, ...]: ...


class Closures(Protocol):
    def add(self, closure: Closure) -> None: ...
    def all(self) -> tuple[Closure, ...]: ...


class Orders(Protocol):
    def lock(self, order_id: str) -> OrderState:
        """The order's state, locked for this transaction (an empty state if it is new), so
        concurrent handlers of one order take turns. Take it before reading anything else."""
        ...

    def save(self, state: OrderState) -> None: ...
    def merchant_of(self, order_id: str) -> str | None:
        """The stream's merchant as stored, read without a lock (it never changes once set):
        enough to take the merchant's lock before the order's."""
        ...

    def lock_merchant(self, merchant_id: str) -> None:
        """Hold the merchant for this transaction, so two handlers grading the merchant's
        violations take turns (Chapter III judges each against the others). Reentrant; stores
        that serialize every writer already (SQLite, memory) need do nothing."""
        ...

    def created_between(self, since: datetime, until: datetime) -> list[str]:
        """Ids of orders created in [since, until): an announcement's special period."""
        ...


class Outcomes(Protocol):
    def for_order(self, order_id: str) -> list[Recorded]: ...
    def record(self, outcome: Outcome) -> None: ...
    def withdraw(self, recorded: Recorded, retraction: Outcome) -> None: ...
    def any_violation_between(
        self, merchant_id: str, category: str, since: datetime, until: datetime
    ) -> bool:
        """Whether the merchant has a standing violation of `category` with since <= at < until."""
        ...

    def points_between(
        self, merchant_id: str, category: str, severity: str, since: datetime, until: datetime
    ) -> int:
        """Points of the merchant's standing violations of `category` and `severity` in the
        window (the weekly cap on slight shortages)."""
        ...


class Deadlines(Protocol):
    def sync(self, order_id: str, current: Sequence[Clocked], now: datetime) -> None:
        """Make the order's timer rows match its clocks: open ones pending at their time."""
        ...

    def is_due(self, deadline: DueDeadline) -> bool: ...
    def open_orders(self, rules: Collection[str]) -> list[str]:
        """Streams with a pending or enqueued clock of one of `rules` (a calendar changed)."""
        ...

    def due_since(self, rules: Collection[str], since: datetime) -> list[str]:
        """Streams with a clock of one of `rules`, in any state, due at or after `since` (a
        closure starting then can move it)."""
        ...

    def timeline(self, order_id: str) -> list[DeadlineView]:
        """The stream's clocks as stored: when due, state, calendar in force, paused time."""
        ...

    def open_of_merchant(
        self, merchant_id: str, rules: Collection[str], until: datetime
    ) -> list[DueDeadline]:
        """The merchant's open (pending or enqueued) clocks of `rules` due at or before `until`,
        across its orders, in due order (`DueDeadline.rank`): those to fire before a violation
        of the merchant dated `until` is graded."""
        ...

    def due(self, until: datetime, limit: int) -> list[DueDeadline]: ...
    def claim(self, until: datetime, limit: int, now: datetime) -> list[DueDeadline]:
        """Mark pending deadlines due by `until` as enqueued and return them, earliest first.
        Safe with several dispatchers: each row is claimed by one (SKIP LOCKED)."""
        ...

    def requeue_stale(self, due_before: datetime, now: datetime) -> int:
        """Enqueued deadlines due, and sent, before `due_before` whose task never completed (a
        lost worker, a lost message) go back to pending, so the dispatcher sends them again."""
        ...


class Alerts(Protocol):
    def add(self, outcome: Outcome, created_at: datetime) -> None:
        """Put the outcome's alert in the outbox (same transaction as the outcome); once."""
        ...


class Ledger(Protocol):
    def add(self, entry: LedgerEntry) -> None: ...
    def totals(self) -> dict[str, int]: ...
    def standing(self, merchant_id: str, since: datetime, until: datetime) -> int:
        """The merchant's points from violations dated in [since, until], net of reversals."""
        ...


@dataclass(frozen=True)
class DeadLetter:
    """A message the ingest consumer refused, kept whole (raw bytes) with the field and reason,
    so an operator can see what was wrong and re-drive it once the producer is fixed."""

    received_at: datetime
    source: str
    field: str
    reason: str
    content_type: str | None
    body: bytes
    id: int | None = None
    replayed_at: datetime | None = None


class DeadLetters(Protocol):
    def add(self, letter: DeadLetter) -> None: ...
    def latest(self, limit: int) -> list[DeadLetter]:
        """The newest dead letters first, replayed or not."""
        ...

    def for_replay(self, ids: Sequence[int] | None, limit: int) -> list[DeadLetter]:
        """The dead letters with these ids (replayed before or not), or with `ids=None` the ones
        never replayed; oldest first, locked for this transaction so two replays take turns."""
        ...

    def mark_replayed(self, ids: Sequence[int], at: datetime) -> None: ...


class UnitOfWork(Protocol):
    """One transaction: state, inbox row, deadlines and outcomes commit together or not at all."""

    @property
    def inbox(self) -> Inbox: ...
    @property
    def orders(self) -> Orders: ...
    @property
    def outcomes(self) -> Outcomes: ...
    @property
    def deadlines(self) -> Deadlines: ...
    @property
    def ledger(self) -> Ledger: ...
    @property
    def alerts(self) -> Alerts: ...
    @property
    def announcements(self) -> Announcements: ...
    @property
    def dead_letters(self) -> DeadLetters: ...
    @property
    def closures(self) -> Closures: ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...
    def savepoint(self) -> AbstractContextManager[None]:
        """A nested transaction: an exception inside undoes only its writes, then propagates.
        Batches use one per message so a poison message cannot sink the others."""
        ...

    def batch(
        self,
        order_ids: Sequence[str],
        event_ids: Sequence[str] = (),
        moments: Sequence[datetime] = (),
        merchants_of: Sequence[str] = (),
    ) -> AbstractContextManager[UnitOfWork]:
        """A view of this transaction for a batch touching these orders and events (and dating
        its outcomes around `moments`): reads them at once and writes at the end of the block
        (or raises `Unisolated`, see there). The merchants of `merchants_of` are locked first
        (`lock_merchant`), before any order. It must not be committed; an exception leaves this
        transaction as it was before."""
        ...
