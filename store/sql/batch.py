"""A write-behind unit of work for a batch of orders: set-based reads and writes.

`SqlUnitOfWork.batch(order_ids)` locks and reads everything the service layer will ask about
those orders in a handful of queries (orders `FOR UPDATE` in id order, inbox digests, outcomes,
deadline rows, announcements), answers the handlers from memory, and writes what they recorded
with one executemany per table (psycopg 3 pipelines it: one network round trip). An ingest
batch of 500 events costs ~15 round trips instead of ~10 per event.

A savepoint cannot undo one message's writes here (they are only buffered). When a handler fails
after it wrote, `savepoint()` raises `Unisolated`: the caller rolls the whole batch back and redoes
it message by message on the plain unit of work, where each message has a real savepoint.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from sqlalchemy import ARRAY, String, Table, bindparam, delete, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models.calendars import Closure
from models.events import Event
from models.order import OrderState
from models.outcomes import LedgerEntry, Outcome, Recorded
from models.policy import Announcement
from models.rules import VIOLATION_RULES, Clocked
from store.base import DeadLetter, DeadlineView, DueDeadline, Unisolated
from store.sql.engine import on_postgresql, one_of
from store.sql.rows import (
    OPEN_STATES,
    Slot,
    alert_values,
    calendar_values,
    dead_letter_values,
    deadline_changes,
    inbox_values,
    ledger_values,
    outcome_values,
    recorded_from_row,
)
from store.sql.tables import (
    AlertRow,
    DeadLetterRow,
    DeadlineRow,
    InboxRow,
    LedgerRow,
    OrderRow,
    OutcomeRow,
    UtcDateTime,
)

if TYPE_CHECKING:
    from store.sql.repositories import SqlRepositories


def _table(row: type[Any]) -> Table:
    table: Table = row.__table__
    return table


ORDERS, INBOX, DEADLINES = _table(OrderRow), _table(InboxRow), _table(DeadlineRow)
OUTCOMES, LEDGER, ALERTS = _table(OutcomeRow), _table(LedgerRow), _table(AlertRow)
DEAD_LETTERS = _table(DeadLetterRow)


class Buffer:
    """Rows waiting for the next flush, one list per table, and a count of writes so far."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.rows: dict[Table, list[dict[str, Any]]] = defaultdict(list)
        self.writes = 0

    def add(self, table: Table, values: dict[str, Any]) -> None:
        self.rows[table].append(values)
        self.writes += 1

    def pending(self, table: Table) -> list[dict[str, Any]]:
        return self.rows.get(table, [])

    def flush(self) -> None:
        for table in (INBOX, OUTCOMES, LEDGER, ALERTS, DEAD_LETTERS):  # insert order: FK-free
            rows = self.rows.pop(table, [])
            if rows:
                bulk_insert(self.session, table, rows)


class BatchedOrders:
    def __init__(self, uow: BatchedUnitOfWork, states: dict[str, OrderState]) -> None:
        self.uow = uow
        self.states = states
        self.dirty: dict[str, OrderState] = {}
        self.saved: set[str] = set()
        self.saves = 0
        """How many states were saved or adopted: a state's merchant may have changed."""
        self.locked_merchants: set[str] = set()

    def lock(self, order_id: str) -> OrderState:
        state = self.states.get(order_id)
        if state is None:  # not in the batch (an announcement's orders): the plain way
            self.uow.buffer.writes += 1  # it may insert the order's row
            state = self.states[order_id] = self.uow.adopt(order_id)
            self.saves += 1
        return state

    def save(self, state: OrderState) -> None:
        self.states[state.order_id] = self.dirty[state.order_id] = state
        self.saves += 1
        self.saved.add(state.order_id)
        self.uow.buffer.writes += 1

    def merchant_of(self, order_id: str) -> str | None:
        state = self.states.get(order_id)
        return state.merchant_id if state else self.uow.sql.orders.merchant_of(order_id)

    def lock_merchant(self, merchant_id: str) -> None:
        """Once per merchant and batch: the lock lasts until the transaction ends, and a batch
        that fails is rolled back whole and redone the plain way, which locks again."""
        if merchant_id not in self.locked_merchants:
            self.uow.sql.orders.lock_merchant(merchant_id)  # a lock, no write: nothing to flush
            self.locked_merchants.add(merchant_id)

    def created_between(self, since: datetime, until: datetime) -> list[str]:
        self.uow.flush()
        return self.uow.sql.orders.created_between(since, until)

    def flush(self) -> None:
        if not self.dirty:
            return
        rows = [
            {
                "order_id": state.order_id,
                "merchant_id": state.merchant_id,
                "created_at": state.created.at if state.created else None,
                "state": state.model_dump(mode="json"),
            }
            for state in self.dirty.values()
        ]
        statement = _insert(self.uow.session, ORDERS)
        columns = statement.excluded
        self.uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=["order_id"],
                set_={
                    "merchant_id": columns.merchant_id,
                    "created_at": columns.created_at,
                    "state": columns.state,
                    "updated_at": func.now(),
                },
            ),
            rows,
        )
        self.dirty.clear()


class BatchedInbox:
    def __init__(self, uow: BatchedUnitOfWork, digests: dict[str, str | None]) -> None:
        self.uow = uow
        self.digests = digests

    def digest_of(self, event_id: str) -> str | None:
        if event_id in self.digests:
            return self.digests[event_id]
        self.uow.flush()
        return self.uow.sql.inbox.digest_of(event_id)

    def add(self, event: Event, digest: str, received_at: datetime) -> None:
        self.digests[event.event_id] = digest
        self.uow.buffer.add(INBOX, inbox_values(event, digest, received_at))


class BatchedAnnouncements:
    def __init__(self, uow: BatchedUnitOfWork) -> None:
        self.uow = uow
        self.cached: tuple[Announcement, ...] | None = None

    def add(self, announcement: Announcement) -> None:
        self.uow.flush()
        self.uow.buffer.writes += 1
        self.uow.sql.announcements.add(announcement)
        self.cached = None

    def all(self) -> tuple[Announcement, ...]:
        if self.cached is None:
            self.cached = self.uow.sql.announcements.all()
        return self.cached


class BatchedClosures:
    def __init__(self, uow: BatchedUnitOfWork) -> None:
        self.uow = uow
        self.cached: tuple[Closure, ...] | None = None

    def add(self, closure: Closure) -> None:
        self.uow.flush()
        self.uow.buffer.writes += 1
        self.uow.sql.closures.add(closure)
        self.cached = None

    def all(self) -> tuple[Closure, ...]:
        if self.cached is None:
            self.cached = self.uow.sql.closures.all()
        return self.cached


class Window:
    """Merchant-wide sums for windows that end at one of the batch's moments, read once per
    batch: `[at - width, at]` for every `at` in [lo, hi] is the shared core [hi - width, lo]
    (one aggregate per merchant) plus two thin edges (read row by row). A question outside
    that shape is asked of the database as usual. A violation window's core holds 1 for a
    merchant with any, not their count: "any?" is all it is asked (see `_any_in_core`)."""

    def __init__(self, lo: datetime, hi: datetime, width: timedelta, merchants: set[str]) -> None:
        self.lo, self.hi, self.width = lo, hi, width
        self.merchants = merchants
        self.core: dict[str, int] = {}
        self.edges: dict[str, list[tuple[datetime, int]]] = defaultdict(list)

    def covers(self, merchant_id: str, since: datetime, until: datetime) -> bool:
        return (
            merchant_id in self.merchants
            and self.width == until - since
            and self.lo <= until <= self.hi
            and self.hi - self.width <= self.lo
        )

    def core_bounds(self) -> tuple[datetime, datetime]:
        return self.hi - self.width, self.lo

    def edge_bounds(self) -> tuple[datetime, datetime, datetime, datetime]:
        """[lo - width, hi - width) and (lo, hi]."""
        return self.lo - self.width, self.hi - self.width, self.lo, self.hi

    def total(self, merchant_id: str, since: datetime, until: datetime, closed: bool) -> int:
        edge = sum(
            points
            for at, points in self.edges.get(merchant_id, ())
            if since <= at and (at <= until if closed else at < until)
        )
        return self.core.get(merchant_id, 0) + edge


class BatchedOutcomes:
    """Outcomes of the batch's orders from memory; merchant-wide questions ask the database
    and add what is still buffered."""

    def __init__(self, uow: BatchedUnitOfWork, by_order: dict[str, list[Recorded]]) -> None:
        self.uow = uow
        self.by_order = by_order

    def for_order(self, order_id: str) -> list[Recorded]:
        return list(self.by_order.get(order_id, ()))

    def record(self, outcome: Outcome) -> None:
        self.uow.buffer.add(OUTCOMES, outcome_values(outcome))
        self.by_order.setdefault(outcome.order_id, []).append(outcome.as_recorded())

    def withdraw(self, recorded: Recorded, retraction: Outcome) -> None:
        self.uow.flush()
        self.uow.buffer.writes += 1
        self.uow.sql.outcomes.withdraw(recorded, retraction)
        known = self.by_order.get(retraction.order_id, [])
        for index, current in enumerate(known):
            if current.key == recorded.key and not current.retracted:
                known[index] = replace(current, retracted=True)
                break

    def any_violation_between(
        self, merchant_id: str, category: str, since: datetime, until: datetime
    ) -> bool:
        if self._buffered(merchant_id, category, since, until):
            return True
        window = self.uow.window(("violations", category), merchant_id, since, until)
        if window is None:
            return self.uow.sql.outcomes.any_violation_between(merchant_id, category, since, until)
        return window.total(merchant_id, since, until, closed=False) > 0

    def points_between(
        self, merchant_id: str, category: str, severity: str, since: datetime, until: datetime
    ) -> int:
        stored = self.uow.sql.outcomes.points_between(merchant_id, category, severity, since, until)
        buffered = self._buffered(merchant_id, category, since, until)
        return stored + sum(row["points"] or 0 for row in buffered if row["severity"] == severity)

    def _buffered(
        self, merchant_id: str, category: str, since: datetime, until: datetime
    ) -> list[dict[str, Any]]:
        """Unwritten standing violations (a buffered outcome is never retracted: withdraw
        writes the buffer first)."""
        return [
            row
            for row in self.uow.buffer.pending(OUTCOMES)
            if row["kind"] == "violation"
            and row["merchant_id"] == merchant_id
            and row["category"] == category
            and since <= row["at"] < until
        ]


DeadlineRows = dict[str, dict[Slot, tuple[datetime, str]]]


class BatchedDeadlines:
    def __init__(self, uow: BatchedUnitOfWork, rows: DeadlineRows) -> None:
        self.uow = uow
        self.rows = rows
        self.new: set[tuple[str, Slot]] = set()
        self.changed: dict[tuple[str, Slot], dict[str, Any]] = {}
        self.open_cache: tuple[frozenset[str], datetime, dict[str, list[DueDeadline]]] | None = None
        self.merchant_index: tuple[tuple[int, int], dict[str | None, list[str]]] | None = None

    def sync(self, order_id: str, current: Sequence[Clocked], now: datetime) -> None:
        existing = self.rows.setdefault(order_id, {})
        for slot, due_at, state, clock in deadline_changes(existing, current, now):
            if slot not in existing:
                self.new.add((order_id, slot))
            existing[slot] = (due_at, state)
            values = {"due_at": due_at, "state": state, "updated_at": now}
            if clock is not None:  # a vanished clock keeps the calendar it had
                values.update(calendar_values(clock))
            self.changed[(order_id, slot)] = values
            self.uow.buffer.writes += 1

    def is_due(self, deadline: DueDeadline) -> bool:
        rows = self.rows.get(deadline.order_id)
        if rows is None:
            self.uow.flush()
            return self.uow.sql.deadlines.is_due(deadline)
        due_at, state = rows.get((deadline.rule, deadline.subject), (None, ""))
        return due_at == deadline.due_at and state in OPEN_STATES

    def open_orders(self, rules: Collection[str]) -> list[str]:
        self.uow.flush()
        return self.uow.sql.deadlines.open_orders(rules)

    def due_since(self, rules: Collection[str], since: datetime) -> list[str]:
        self.uow.flush()
        return self.uow.sql.deadlines.due_since(rules, since)

    def timeline(self, order_id: str) -> list[DeadlineView]:
        self.uow.flush()
        return self.uow.sql.deadlines.timeline(order_id)

    def open_of_merchant(
        self, merchant_id: str, rules: Collection[str], until: datetime
    ) -> list[DueDeadline]:
        """The batch's own orders from memory (their rows may be buffered), the others from
        the database, without a flush: a timer group asks this before each violation."""
        stored = self._stored_open(merchant_id, rules, until)
        found = [
            deadline
            for deadline in stored
            if deadline.order_id not in self.rows and deadline.due_at <= until
        ]
        for order_id in self._orders_of(merchant_id):
            slots = self.rows[order_id]
            found += [
                DueDeadline(order_id, rule, subject, due_at)
                for (rule, subject), (due_at, state) in slots.items()
                if rule in rules and state in OPEN_STATES and due_at <= until
            ]
        return sorted(found, key=lambda deadline: deadline.rank)

    def _orders_of(self, merchant_id: str) -> list[str]:
        """The batch's orders of a merchant. Indexed once per change of the batch's orders: a
        wave's group asks before each of its ~200 violations, and a scan of every order each
        time was a fifth of a worker's time in B4."""
        version = (len(self.rows), self.uow.orders.saves)
        if self.merchant_index is None or self.merchant_index[0] != version:
            index: dict[str | None, list[str]] = defaultdict(list)
            for order_id in self.rows:
                index[self.uow.orders.merchant_of(order_id)].append(order_id)
            self.merchant_index = (version, index)
        return self.merchant_index[1].get(merchant_id, [])

    def _stored_open(
        self, merchant_id: str, rules: Collection[str], until: datetime
    ) -> list[DueDeadline]:
        """The stored open clocks of a merchant, read once for every merchant of the batch up
        to its last moment: a wave's group grades hundreds of violations, and one read each
        made the wave quadratic (every overdue row is open while the wave fires). Rows of
        orders the batch holds are answered from memory by the caller, so what it changes
        itself never comes from here."""
        key = (frozenset(rules), max(until, self.uow.span[1]) if self.uow.span else until)
        cached = self.open_cache
        if (
            cached is None
            or cached[0] != key[0]
            or cached[1] < until
            or merchant_id not in cached[2]
        ):
            merchants = {s.merchant_id for s in self.uow.orders.states.values() if s.merchant_id}
            merchants.add(merchant_id)
            found = self.uow.sql.deadlines.open_of_merchants(merchants, key[0], key[1])
            cached = self.open_cache = (key[0], key[1], {m: found.get(m, []) for m in merchants})
        return cached[2][merchant_id]

    def due(self, until: datetime, limit: int) -> list[DueDeadline]:
        raise NotImplementedError("the dispatcher uses the plain unit of work")

    def claim(self, until: datetime, limit: int, now: datetime) -> list[DueDeadline]:
        raise NotImplementedError("the dispatcher uses the plain unit of work")

    def requeue_stale(self, due_before: datetime, now: datetime) -> int:
        raise NotImplementedError("the dispatcher uses the plain unit of work")

    def flush(self) -> None:
        inserts: list[dict[str, Any]] = []
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}  # by the columns set
        for key, values in self.changed.items():
            order_id, (rule, subject) = key
            if key in self.new:
                inserts.append({"calendar": None, "paused": None, **values})
                merchant_id = self.uow.orders.merchant_of(order_id)
                inserts[-1].update(
                    order_id=order_id, merchant_id=merchant_id, rule=rule, subject=subject
                )
            else:
                keys = {"k_order": order_id, "k_rule": rule, "k_subject": subject}
                updates.setdefault(tuple(values), []).append({**keys, **values})
        session = self.uow.session
        if inserts:
            bulk_insert(session, DEADLINES, inserts)
        for rows in updates.values():
            update_deadlines(session, rows)
        self.new.clear()
        self.changed.clear()


_UPDATE_DEADLINE = update(DEADLINES).where(
    DEADLINES.c.order_id == bindparam("k_order"),
    DEADLINES.c.rule == bindparam("k_rule"),
    DEADLINES.c.subject == bindparam("k_subject"),
)
UTC_TIME = UtcDateTime()
_UPDATE_DEADLINES_FROM_JSON = """
    UPDATE deadlines AS d SET {columns}
    FROM jsonb_populate_recordset(NULL::deadlines, CAST(:rows AS jsonb)) AS v
    WHERE d.order_id = v.order_id AND d.rule = v.rule AND d.subject = v.subject
"""


def update_deadlines(session: Session, rows: list[dict[str, Any]]) -> None:
    """Deadline rows that all set the same columns, keyed by `k_order`, `k_rule`, `k_subject`.

    PostgreSQL: one statement over the rows as one JSON array, each read back as a `deadlines`
    record. An executemany built every row's parameters in SQLAlchemy (~7% of a timer worker
    in a wave) and sent each row on its own. Elsewhere: the executemany. (A `paused` of None
    is SQL NULL this way, JSON null through the insert and the executemany; both read back
    as None, and no query filters on it.)"""
    if not on_postgresql(session):
        session.execute(_UPDATE_DEADLINE, rows)
        return
    columns = [name for name in rows[0] if not name.startswith("k_")]
    unknown = set(columns) - set(DEADLINES.c.keys())
    if unknown:
        raise ValueError(f"not columns of deadlines: {sorted(unknown)}")
    dialect = session.get_bind().dialect
    records = [
        {"order_id": row["k_order"], "rule": row["k_rule"], "subject": row["k_subject"]}
        | {name: _json_value(row[name], dialect) for name in columns}
        for row in rows
    ]
    sql = _UPDATE_DEADLINES_FROM_JSON.format(columns=", ".join(f"{c} = v.{c}" for c in columns))
    session.execute(text(sql), {"rows": orjson.dumps(records).decode()})


def _json_value(value: Any, dialect: Dialect) -> Any:
    """A value as PostgreSQL should read it from JSON: times through the time columns' own
    bind processing (aware, in UTC; a naive one is refused), then as ISO 8601."""
    if not isinstance(value, datetime):
        return value
    aware = UTC_TIME.process_bind_param(value, dialect)
    assert aware is not None  # only None binds as None
    return aware.isoformat()


class BatchedLedger:
    def __init__(self, uow: BatchedUnitOfWork) -> None:
        self.uow = uow

    def add(self, entry: LedgerEntry) -> None:
        self.uow.buffer.add(LEDGER, ledger_values(entry))

    def totals(self) -> dict[str, int]:
        self.uow.flush()
        return self.uow.sql.ledger.totals()

    def standing(self, merchant_id: str, since: datetime, until: datetime) -> int:
        window = self.uow.window(("ledger", ""), merchant_id, since, until)
        if window is None:
            stored = self.uow.sql.ledger.standing(merchant_id, since, until)
        else:
            stored = window.total(merchant_id, since, until, closed=True)
        return stored + sum(
            int(row["points"])
            for row in self.uow.buffer.pending(LEDGER)
            if row["merchant_id"] == merchant_id and since <= row["outcome_at"] <= until
        )


class BatchedAlerts:
    def __init__(self, uow: BatchedUnitOfWork) -> None:
        self.uow = uow

    def add(self, outcome: Outcome, created_at: datetime) -> None:
        if outcome.merchant_id is not None:
            self.uow.buffer.add(ALERTS, alert_values(outcome, created_at))


class BatchedDeadLetters:
    def __init__(self, uow: BatchedUnitOfWork) -> None:
        self.uow = uow

    def add(self, letter: DeadLetter) -> None:
        self.uow.buffer.add(DEAD_LETTERS, dead_letter_values(letter))

    def latest(self, limit: int) -> list[DeadLetter]:
        self.uow.flush()
        return self.uow.sql.dead_letters.latest(limit)

    def for_replay(self, ids: Sequence[int] | None, limit: int) -> list[DeadLetter]:
        self.uow.flush()
        return self.uow.sql.dead_letters.for_replay(ids, limit)

    def mark_replayed(self, ids: Sequence[int], at: datetime) -> None:
        self.uow.flush()
        self.uow.sql.dead_letters.mark_replayed(ids, at)


class BatchedUnitOfWork:
    """The batch's view of one SqlUnitOfWork transaction (see the module docstring)."""

    def __init__(
        self,
        sql: SqlRepositories,
        order_ids: Sequence[str],
        event_ids: Sequence[str],
        moments: Sequence[datetime] = (),
        merchants_of: Sequence[str] = (),
    ) -> None:
        """`moments`: when the batch's outcomes will most likely be dated (a timer group's due
        times); merchant-wide questions about windows ending then are read once (`Window`).
        `merchants_of`: orders whose merchants are locked before any order is (a timer group's
        violation clocks: `fire_deadline`'s lock order), all in one statement."""
        self.sql = sql
        self.span = (min(moments), max(moments)) if moments else None
        self.windows: dict[tuple[str, str], Window | None] = {}
        self.session = sql.session
        self.buffer = Buffer(self.session)
        merchants = sql.orders.lock_merchants_of(sorted(set(merchants_of)))
        caught_up = self._caught_up(merchants)
        ids = sorted({*order_ids, *(d.order_id for each in caught_up.values() for d in each)})
        # a timer group's orders exist (its clocks came from them): only events create rows;
        # a missing one is created the plain way by `orders.lock` (`adopt`)
        self.created = _insert_missing(self.session, ids) if event_ids else set()
        self.orders = BatchedOrders(self, _lock_orders(self.session, ids))
        self.orders.locked_merchants |= merchants
        # digests after the locks: a twin of one of our events committed meanwhile is seen
        self.inbox = BatchedInbox(self, _digests_of(self.session, event_ids))
        self.outcomes = BatchedOutcomes(self, _outcomes_of(self.session, ids))
        self.deadlines = BatchedDeadlines(self, _deadlines_of(self.session, ids))
        if merchants and self.span is not None:  # what `open_of_merchant` would read again
            self.deadlines.open_cache = (VIOLATION_RULES, self.span[1], caught_up)
        self.ledger = BatchedLedger(self)
        self.alerts = BatchedAlerts(self)
        self.announcements = BatchedAnnouncements(self)
        self.closures = BatchedClosures(self)
        self.dead_letters = BatchedDeadLetters(self)

    def _caught_up(self, merchants: Collection[str]) -> dict[str, list[DueDeadline]]:
        """By merchant, the violation clocks grading this group's violations fires first
        (`handlers._catch_up`): the locked merchants' open violation clocks due by the
        group's last moment. Their orders are read and locked with the group's own (after the
        merchants, as `fire_deadline` orders its locks) instead of one by one when each is
        reached: with two worker processes, groups of the same merchants run at once, and the
        one that takes the merchants first fires the other's clocks; adopted one at a time
        (each a flush and four reads) that made a 20,000 wave take minutes instead of
        seconds."""
        if not merchants or self.span is None:
            return {}
        found = self.sql.deadlines.open_of_merchants(merchants, VIOLATION_RULES, self.span[1])
        earliest = min((d.due_at for each in found.values() for d in each), default=None)
        if earliest is not None:  # graded as of their own due times: the windows must cover them
            self.span = (min(self.span[0], earliest), self.span[1])
        return {merchant: found.get(merchant, []) for merchant in merchants}

    def adopt(self, order_id: str) -> OrderState:
        """Lock an order outside the batch (an announcement re-judges its period's orders)
        the plain way, and read its outcomes and deadline rows into the batch."""
        self.flush()
        state = self.sql.orders.lock(order_id)
        self.outcomes.by_order.update(_outcomes_of(self.session, [order_id]))
        self.deadlines.rows.update(_deadlines_of(self.session, [order_id]))
        return state

    def window(
        self, kind: tuple[str, str], merchant_id: str, since: datetime, until: datetime
    ) -> Window | None:
        """The batch's window of this kind for the merchants of its orders, read on first use
        (again after a flush); None if the question does not fit it (no moments given, another
        width, a time outside the span, a merchant the batch did not know when it was read)."""
        if self.span is None:
            return None
        window = self.windows.get(kind)
        if window is None or not window.covers(merchant_id, since, until):
            known = {state.merchant_id for state in self.orders.states.values()}
            window = Window(*self.span, until - since, {m for m in known if m is not None})
            if not window.covers(merchant_id, since, until):
                return None
            _read_window(self.session, window, kind)
            self.windows[kind] = window
        return window

    def flush(self) -> None:
        """Write everything buffered (the unit of work still commits or rolls back as one)."""
        self.windows.clear()  # they hold what was written before, not what is written now
        self.session.flush()
        self.orders.flush()
        self.deadlines.flush()
        self.buffer.flush()

    def finish(self) -> None:
        """Write the rest; orders whose row this batch created but never saved lose it again,
        as a rolled-back savepoint would have taken it away."""
        self.flush()
        unused = sorted(self.created - self.orders.saved)
        if unused:
            self.session.execute(delete(ORDERS).where(ORDERS.c.order_id.in_(unused)))

    def __enter__(self) -> BatchedUnitOfWork:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def commit(self) -> None:
        raise NotImplementedError("the batch's caller commits the transaction")

    def rollback(self) -> None:
        raise NotImplementedError("the batch's caller rolls the transaction back")

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        writes = self.buffer.writes
        try:
            yield
        except Exception as error:
            if self.buffer.writes != writes:
                raise Unisolated(f"{type(error).__name__}: {error}") from error
            raise

    @contextmanager
    def batch(
        self,
        order_ids: Sequence[str],
        event_ids: Sequence[str] = (),
        moments: Sequence[datetime] = (),
        merchants_of: Sequence[str] = (),
    ) -> Iterator[BatchedUnitOfWork]:
        yield self


def _read_window(session: Session, window: Window, kind: tuple[str, str]) -> None:
    """Fill a window: standing violations of a category (over [at - width, at): whether there
    are any on PostgreSQL, counted elsewhere), or ledger points (summed, over [at - width, at])."""
    table, at, amount, each, where, closed = _window_source(kind)
    merchant = table.c.merchant_id
    first, last = window.core_bounds()
    in_core = [*where, at >= first, at <= last if closed else at < last]
    where.append(one_of(session, merchant, sorted(window.merchants)))
    if kind[0] == "violations" and on_postgresql(session):
        window.core.update(_any_in_core(session, table, in_core, window.merchants))
    else:
        core = select(merchant, amount).where(*in_core, where[-1])
        window.core.update({m: int(v) for m, v in session.execute(core.group_by(merchant))})
    low, low_end, high, high_end = window.edge_bounds()
    high_start = at > high if closed else at >= high
    edges = select(merchant, at, each).where(
        *where, ((at >= low) & (at < low_end)) | (high_start & (at <= high_end))
    )
    for merchant_id, moment, points in session.execute(edges):
        window.edges[merchant_id].append((moment, int(points)))


def _any_in_core(
    session: Session, table: Table, in_core: list[Any], merchants: Collection[str]
) -> dict[str, int]:
    """1 for each merchant with a standing violation in the core, read as one probe per
    merchant of the (merchant, category, time) index that stops at the first standing
    violation (a warning or retracted one on the way is read and skipped). Violation
    windows are only ever asked "any?" (`any_violation_between`), so a count would read the
    merchant's whole 30 days of them: on a sales day that grows with every group fired, and
    it was the largest share of PostgreSQL's time in a 100,000 wave."""
    listed = (
        func.unnest(bindparam(None, sorted(merchants), type_=ARRAY(String)))
        .table_valued("merchant_id")
        .render_derived(name="listed")
    )
    probe = select(literal(1)).where(*in_core, table.c.merchant_id == listed.c.merchant_id)
    query = select(listed.c.merchant_id).where(probe.exists())
    return {merchant_id: 1 for merchant_id in session.scalars(query)}


def _window_source(kind: tuple[str, str]) -> tuple[Table, Any, Any, Any, list[Any], bool]:
    """(table, time column, aggregate, each row's amount, filters, closed) of a window kind."""
    if kind[0] == "violations":
        standing = [
            OUTCOMES.c.category == kind[1],
            OUTCOMES.c.kind == "violation",
            OUTCOMES.c.retracted.is_(False),
        ]
        return OUTCOMES, OUTCOMES.c.at, func.count(), literal(1), standing, False
    return LEDGER, LEDGER.c.outcome_at, func.sum(LEDGER.c.points), LEDGER.c.points, [], True


def bulk_insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """Plain inserts of rows that all set the same columns. PostgreSQL: one COPY stream, each
    value through the column type's own bind processing; an executemany, even pipelined, was
    ~40% of a set-based batch's time, most of it psycopg's per-row protocol work in Python
    (docs/bench.md). Elsewhere (SQLite): executemany."""
    if not on_postgresql(session):
        session.execute(table.insert(), rows)
        return
    bind = session.get_bind()
    columns = list(rows[0])
    processors = [
        table.c[name].type.dialect_impl(bind.dialect).bind_processor(bind.dialect)
        for name in columns
    ]
    names = ", ".join(f'"{name}"' for name in columns)
    statement = f'COPY "{table.name}" ({names}) FROM STDIN'
    driver: Any = session.connection().connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [row[name] if process is None else process(row[name])
                     for name, process in zip(columns, processors, strict=True)]
                )  # fmt: skip
    except psycopg.Error as error:  # as SQLAlchemy's own (OperationalError, IntegrityError…),
        # so retries and the connectivity checks see what they see for every other statement
        raise DBAPIError.instance(statement, None, error, psycopg.Error) from error


def _insert(session: Session, table: Table) -> Any:
    return (postgresql_insert if on_postgresql(session) else sqlite_insert)(table)


def _insert_missing(session: Session, ids: list[str]) -> set[str]:
    """Create the rows of new orders (empty state), in id order; returns those created here.
    A concurrent batch creating the same order waits on our row until we commit."""
    if not ids:
        return set()
    rows = [
        {"order_id": order_id, "state": OrderState(order_id=order_id).model_dump(mode="json")}
        for order_id in ids
    ]
    statement = _insert(session, ORDERS).on_conflict_do_nothing(index_elements=["order_id"])
    created = session.execute(statement.returning(ORDERS.c.order_id), rows)
    return set(created.scalars())


def _lock_orders(session: Session, ids: list[str]) -> dict[str, OrderState]:
    """All the batch's orders, locked in id order (two batches never wait on each other in a
    cycle)."""
    query = (
        select(ORDERS.c.order_id, ORDERS.c.state)
        .where(one_of(session, ORDERS.c.order_id, ids))
        .order_by(ORDERS.c.order_id)
        .with_for_update()
    )
    return {
        order_id: OrderState.model_validate(state) for order_id, state in session.execute(query)
    }


def _digests_of(session: Session, event_ids: Sequence[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = dict.fromkeys(event_ids)
    if event_ids:
        wanted = one_of(session, INBOX.c.event_id, event_ids)
        query = select(INBOX.c.event_id, INBOX.c.digest).where(wanted)
        found.update({event_id: digest for event_id, digest in session.execute(query)})
    return found


def _outcomes_of(session: Session, ids: list[str]) -> dict[str, list[Recorded]]:
    wanted = one_of(session, OutcomeRow.order_id, ids)
    query = select(OutcomeRow).where(wanted).order_by(OutcomeRow.id)
    found: dict[str, list[Recorded]] = {}
    for row in session.scalars(query):
        found.setdefault(row.order_id, []).append(recorded_from_row(row))
    return found


def _deadlines_of(session: Session, ids: list[str]) -> DeadlineRows:
    query = select(
        DEADLINES.c.order_id,
        DEADLINES.c.rule,
        DEADLINES.c.subject,
        DEADLINES.c.due_at,
        DEADLINES.c.state,
    ).where(one_of(session, DEADLINES.c.order_id, ids))
    found: DeadlineRows = {order_id: {} for order_id in ids}
    for order_id, rule, subject, due_at, state in session.execute(query):
        found[order_id][(rule, subject)] = (due_at, state)
    return found
