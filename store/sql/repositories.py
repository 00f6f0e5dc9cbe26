"""The plain SQL repositories: one statement per question, over one session. The unit of work
exposes them (store.sql.unit_of_work); a batch (store.sql.batch) falls back on them for what it
does not answer from memory."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from hashlib import blake2b
from typing import Any

from sqlalchemy import (
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models.calendars import Closure
from models.events import Event
from models.order import OrderState
from models.outcomes import LedgerEntry, Outcome, Recorded
from models.policy import Announcement
from models.rules import Clocked
from store.base import DeadLetter, DeadlineView, DueDeadline
from store.sql.engine import on_postgresql, one_of
from store.sql.rows import (
    DUE_ORDER,
    OPEN_STATES,
    alert_values,
    calendar_values,
    dead_letter_from_row,
    dead_letter_values,
    deadline_changes,
    inbox_values,
    ledger_values,
    outcome_values,
    recorded_from_row,
)
from store.sql.tables import (
    AlertRow,
    AnnouncementRow,
    ClosureRow,
    DeadLetterRow,
    DeadlineRow,
    InboxRow,
    LedgerRow,
    OrderRow,
    OutcomeRow,
    RetractionRow,
)


class SqlInbox:
    def __init__(self, session: Session) -> None:
        self.session = session

    def digest_of(self, event_id: str) -> str | None:
        return self.session.scalar(select(InboxRow.digest).where(InboxRow.event_id == event_id))

    def add(self, event: Event, digest: str, received_at: datetime) -> None:
        self.session.add(InboxRow(**inbox_values(event, digest, received_at)))


class SqlOrders:
    def __init__(self, session: Session) -> None:
        self.session = session

    def lock(self, order_id: str) -> OrderState:
        row = self.session.get(OrderRow, order_id, with_for_update=True)
        if row is None:
            self._insert_if_absent(order_id)
            row = self.session.get(OrderRow, order_id, with_for_update=True, populate_existing=True)
            assert row is not None
        return OrderState.model_validate(row.state)

    def _insert_if_absent(self, order_id: str) -> None:
        """Two handlers of a new order race to create its row; the loser waits on the lock."""
        empty = OrderState(order_id=order_id).model_dump(mode="json")
        insert = postgresql_insert if on_postgresql(self.session) else sqlite_insert
        statement = insert(OrderRow).values(order_id=order_id, state=empty)
        self.session.execute(statement.on_conflict_do_nothing(index_elements=["order_id"]))

    def save(self, state: OrderState) -> None:
        row = self.session.get(OrderRow, state.order_id)
        if row is None:
            row = OrderRow(order_id=state.order_id)
            self.session.add(row)
        row.merchant_id = state.merchant_id
        row.created_at = state.created.at if state.created else None
        row.state = state.model_dump(mode="json")

    def merchant_of(self, order_id: str) -> str | None:
        return self.session.scalar(
            select(OrderRow.merchant_id).where(OrderRow.order_id == order_id)
        )

    def lock_merchant(self, merchant_id: str) -> None:
        self.lock_merchants([merchant_id])

    def lock_merchants_of(self, order_ids: Collection[str]) -> set[str]:
        """Lock the merchants of these orders and return them: a timer group grades violations
        of up to a few hundred merchants, and one round trip each was a third of a worker's
        time in B4. On SQLite nothing is read either: there is nothing to lock."""
        if not order_ids or not on_postgresql(self.session):
            return set()
        query = select(OrderRow.merchant_id).where(
            one_of(self.session, OrderRow.order_id, order_ids), OrderRow.merchant_id.is_not(None)
        )
        merchants = {merchant for merchant in self.session.scalars(query) if merchant is not None}
        self.lock_merchants(merchants)
        return merchants

    def lock_merchants(self, merchant_ids: Collection[str]) -> None:
        """Transaction-level advisory locks on PostgreSQL (no row needed: most merchants have
        none in `merchants`), all in one statement, in key order: two transactions locking
        overlapping sets never wait on each other in a cycle. SQLite's BEGIN IMMEDIATE already
        serializes writers."""
        if merchant_ids and on_postgresql(self.session):
            keys = sorted(merchant_lock_key(merchant_id) for merchant_id in merchant_ids)
            self.session.execute(
                text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k"),
                {"keys": keys},
            )

    def created_between(self, since: datetime, until: datetime) -> list[str]:
        query = (
            select(OrderRow.order_id)
            .where(OrderRow.created_at >= since, OrderRow.created_at < until)
            .order_by(OrderRow.order_id)
        )
        return list(self.session.scalars(query))


def merchant_lock_key(merchant_id: str) -> int:
    """A merchant's advisory lock key: a stable signed 64-bit hash (Python's `hash` is salted
    per process), prefixed so it cannot meet another use of advisory locks."""
    digest = blake2b(f"slatimer.merchant:{merchant_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SqlAnnouncements:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, announcement: Announcement) -> None:
        self.session.merge(AnnouncementRow(**announcement.model_dump()))

    def all(self) -> tuple[Announcement, ...]:
        rows = self.session.scalars(select(AnnouncementRow).order_by(AnnouncementRow.published_at))
        return tuple(
            Announcement(
                announcement_id=row.announcement_id,
                published_at=row.published_at,
                applies_from=row.applies_from,
                applies_until=row.applies_until,
                ship_within_hours=row.ship_within_hours,
            )
            for row in rows
        )


class SqlClosures:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, closure: Closure) -> None:
        self.session.merge(ClosureRow(**closure.model_dump()))  # an amendment replaces it

    def all(self) -> tuple[Closure, ...]:
        query = select(ClosureRow).order_by(ClosureRow.starts_at, ClosureRow.closure_id)
        rows = self.session.scalars(query)
        return tuple(Closure.model_validate(row, from_attributes=True) for row in rows)


class SqlOutcomes:
    def __init__(self, session: Session) -> None:
        self.session = session

    def for_order(self, order_id: str) -> list[Recorded]:
        rows = self.session.scalars(
            select(OutcomeRow).where(OutcomeRow.order_id == order_id).order_by(OutcomeRow.id)
        )
        return [recorded_from_row(row) for row in rows]

    def record(self, outcome: Outcome) -> None:
        self.session.add(OutcomeRow(**outcome_values(outcome)))
        self.session.flush()  # constraints speak now, inside this transaction

    def withdraw(self, recorded: Recorded, retraction: Outcome) -> None:
        outcome_id = self.session.scalar(
            update(OutcomeRow)
            .where(
                OutcomeRow.order_id == retraction.order_id,
                OutcomeRow.kind == recorded.kind,
                OutcomeRow.rule == recorded.rule,
                OutcomeRow.subject == recorded.subject,
                OutcomeRow.at == recorded.at,
                OutcomeRow.retracted.is_(False),
            )
            .values(retracted=True)
            .returning(OutcomeRow.id)
        )
        if outcome_id is None:
            raise LookupError(f"nothing standing to withdraw at {recorded.key}")
        self.session.add(
            RetractionRow(
                outcome_id=outcome_id,
                order_id=retraction.order_id,
                rule=retraction.rule,
                at=retraction.at,
                evidence=(retraction.evidence or "")[:512],
            )
        )

    def any_violation_between(
        self, merchant_id: str, category: str, since: datetime, until: datetime
    ) -> bool:
        query = select(OutcomeRow.id).where(
            *_standing_violations(merchant_id, category, since, until)
        )
        return bool(self.session.scalar(select(exists(query))))

    def points_between(
        self, merchant_id: str, category: str, severity: str, since: datetime, until: datetime
    ) -> int:
        query = _points_query(merchant_id, category, severity, since, until)
        return int(self.session.scalar(query) or 0)


def _standing_violations(
    merchant_id: str, category: str, since: datetime, until: datetime
) -> tuple[Any, ...]:
    """The merchant's standing violations of `category` with since <= at < until."""
    return (
        OutcomeRow.merchant_id == merchant_id,
        OutcomeRow.category == category,
        OutcomeRow.kind == "violation",
        OutcomeRow.retracted.is_(False),
        OutcomeRow.at >= since,
        OutcomeRow.at < until,
    )


def _points_query(
    merchant_id: str, category: str, severity: str, since: datetime, until: datetime
) -> Any:
    return select(func.coalesce(func.sum(OutcomeRow.points), 0)).where(
        *_standing_violations(merchant_id, category, since, until),
        OutcomeRow.severity == severity,
    )


class SqlDeadlines:
    def __init__(self, session: Session) -> None:
        self.session = session

    def sync(self, order_id: str, current: Sequence[Clocked], now: datetime) -> None:
        rows = self.session.scalars(select(DeadlineRow).where(DeadlineRow.order_id == order_id))
        existing = {(row.rule, row.subject): row for row in rows}
        seen = {slot: (row.due_at, row.state) for slot, row in existing.items()}
        for slot, due_at, state, clock in deadline_changes(seen, current, now):
            row = existing.get(slot)
            if row is None:
                row = DeadlineRow(order_id=order_id, rule=slot[0], subject=slot[1])
                row.merchant_id = self._merchant_of(order_id)
                self.session.add(row)
            if clock is not None:
                timing = calendar_values(clock)
                row.calendar, row.paused = timing["calendar"], timing["paused"]
            row.due_at, row.state, row.updated_at = due_at, state, now

    def _merchant_of(self, order_id: str) -> str | None:
        """The order's row is in the session already (its caller locked it)."""
        order = self.session.get(OrderRow, order_id)
        return order.merchant_id if order is not None else None

    def open_orders(self, rules: Collection[str]) -> list[str]:
        query = (
            select(DeadlineRow.order_id)
            .where(DeadlineRow.rule.in_(list(rules)), DeadlineRow.state.in_(OPEN_STATES))
            .distinct()
            .order_by(DeadlineRow.order_id)
        )
        return list(self.session.scalars(query))

    def due_since(self, rules: Collection[str], since: datetime) -> list[str]:
        query = (
            select(DeadlineRow.order_id)
            .where(DeadlineRow.rule.in_(list(rules)), DeadlineRow.due_at >= since)
            .distinct()
            .order_by(DeadlineRow.order_id)
        )
        return list(self.session.scalars(query))

    def timeline(self, order_id: str) -> list[DeadlineView]:
        query = (
            select(DeadlineRow)
            .where(DeadlineRow.order_id == order_id)
            .order_by(DeadlineRow.due_at, DeadlineRow.rule, DeadlineRow.subject)
        )
        return [
            DeadlineView(
                rule=row.rule,
                subject=row.subject,
                due_at=row.due_at,
                state=row.state,
                calendar=row.calendar,
                paused=tuple(
                    (datetime.fromisoformat(start), datetime.fromisoformat(end))
                    for start, end in row.paused or ()
                ),
            )
            for row in self.session.scalars(query)
        ]

    def open_of_merchant(
        self, merchant_id: str, rules: Collection[str], until: datetime
    ) -> list[DueDeadline]:
        return self.open_of_merchants([merchant_id], rules, until).get(merchant_id, [])

    def open_of_merchants(
        self, merchant_ids: Collection[str], rules: Collection[str], until: datetime
    ) -> dict[str | None, list[DueDeadline]]:
        """Read through the partial index of open rows by merchant and due time: only the
        merchants' own open rows are touched, however many others are overdue (a wave)."""
        query = (
            select(
                DeadlineRow.merchant_id,
                DeadlineRow.order_id,
                DeadlineRow.rule,
                DeadlineRow.subject,
                DeadlineRow.due_at,
            )
            .where(
                one_of(self.session, DeadlineRow.merchant_id, merchant_ids),
                DeadlineRow.state.in_(OPEN_STATES),
                DeadlineRow.due_at <= until,
                DeadlineRow.rule.in_(list(rules)),
            )
            .order_by(*DUE_ORDER)
        )
        found: dict[str | None, list[DueDeadline]] = {}
        for merchant_id, order_id, rule, subject, due_at in self.session.execute(query):
            found.setdefault(merchant_id, []).append(DueDeadline(order_id, rule, subject, due_at))
        return found

    def is_due(self, deadline: DueDeadline) -> bool:
        found = self.session.scalar(
            select(DeadlineRow.id).where(
                DeadlineRow.order_id == deadline.order_id,
                DeadlineRow.rule == deadline.rule,
                DeadlineRow.subject == deadline.subject,
                DeadlineRow.due_at == deadline.due_at,
                DeadlineRow.state.in_(OPEN_STATES),
            )
        )
        return found is not None

    def due(self, until: datetime, limit: int) -> list[DueDeadline]:
        query = (
            select(DeadlineRow.order_id, DeadlineRow.rule, DeadlineRow.subject, DeadlineRow.due_at)
            .where(DeadlineRow.state == "pending", DeadlineRow.due_at <= until)
            .order_by(*DUE_ORDER)
            .limit(limit)
        )
        return [DueDeadline(*row) for row in self.session.execute(query)]

    def claim(self, until: datetime, limit: int, now: datetime) -> list[DueDeadline]:
        candidates = (
            select(DeadlineRow.id)
            .where(DeadlineRow.state == "pending", DeadlineRow.due_at <= until)
            .order_by(DeadlineRow.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(self.session.scalars(candidates))
        if not ids:
            return []
        claimed = self.session.execute(
            update(DeadlineRow)
            .where(DeadlineRow.id.in_(ids), DeadlineRow.state == "pending")
            .values(state="enqueued", enqueued_at=now, updated_at=now)
            .returning(
                DeadlineRow.order_id,
                DeadlineRow.rule,
                DeadlineRow.subject,
                DeadlineRow.due_at,
                DeadlineRow.merchant_id,
            )
            .execution_options(synchronize_session=False)
        )
        found = [DueDeadline(*row) for row in claimed]
        return sorted(found, key=lambda deadline: deadline.due_at)

    def requeue_stale(self, due_before: datetime, now: datetime) -> int:
        result = self.session.execute(
            update(DeadlineRow)
            .where(
                DeadlineRow.state == "enqueued",
                DeadlineRow.due_at < due_before,
                DeadlineRow.enqueued_at < due_before,  # sent long enough ago, not just now
            )
            .values(state="pending", updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]


class SqlLedger:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, entry: LedgerEntry) -> None:
        self.session.add(LedgerRow(**ledger_values(entry)))

    def standing(self, merchant_id: str, since: datetime, until: datetime) -> int:
        query = select(func.coalesce(func.sum(LedgerRow.points), 0)).where(
            LedgerRow.merchant_id == merchant_id,
            LedgerRow.outcome_at >= since,
            LedgerRow.outcome_at <= until,
        )
        return int(self.session.scalar(query) or 0)

    def totals(self) -> dict[str, int]:
        query = (
            select(LedgerRow.merchant_id, func.sum(LedgerRow.points))
            .group_by(LedgerRow.merchant_id)
            .order_by(LedgerRow.merchant_id)
        )
        return {merchant: int(points) for merchant, points in self.session.execute(query)}


class SqlDeadLetters:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, letter: DeadLetter) -> None:
        self.session.add(DeadLetterRow(**dead_letter_values(letter)))

    def latest(self, limit: int) -> list[DeadLetter]:
        query = select(DeadLetterRow).order_by(DeadLetterRow.id.desc()).limit(limit)
        return [dead_letter_from_row(row) for row in self.session.scalars(query)]

    def for_replay(self, ids: Sequence[int] | None, limit: int) -> list[DeadLetter]:
        query = select(DeadLetterRow).order_by(DeadLetterRow.id).limit(limit).with_for_update()
        if ids is None:
            query = query.where(DeadLetterRow.replayed_at.is_(None))
        else:
            query = query.where(DeadLetterRow.id.in_(list(ids)))
        return [dead_letter_from_row(row) for row in self.session.scalars(query)]

    def mark_replayed(self, ids: Sequence[int], at: datetime) -> None:
        self.session.execute(
            update(DeadLetterRow)
            .where(DeadLetterRow.id.in_(list(ids)))
            .values(replayed_at=at)
            .execution_options(synchronize_session=False)
        )


class SqlAlerts:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, outcome: Outcome, created_at: datetime) -> None:
        if outcome.merchant_id is not None:
            self.session.add(AlertRow(**alert_values(outcome, created_at)))


class SqlRepositories:
    """Every repository over one session, built together when a transaction starts."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.inbox = SqlInbox(session)
        self.orders = SqlOrders(session)
        self.outcomes = SqlOutcomes(session)
        self.deadlines = SqlDeadlines(session)
        self.ledger = SqlLedger(session)
        self.alerts = SqlAlerts(session)
        self.announcements = SqlAnnouncements(session)
        self.closures = SqlClosures(session)
        self.dead_letters = SqlDeadLetters(session)
