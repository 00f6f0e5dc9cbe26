"""Bulk loading of orders and their deadline rows straight into PostgreSQL (INSERT … SELECT over
generate_series, server-side), matching what `record_event` writes for an `order.created`.

The rows are not hand-written: `template()` runs the real `record_event` on the in-memory store
for one sample order and keeps the state JSON it saved and the deadline rows it synced; the SQL
then stamps that template with each order's id, merchant and creation time. `check_matches()`
proves it against the real SQL store in every run (bench-quick included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from models.events import parse_event
from models.policy import Policy
from store.memory import MemoryUnitOfWork
from worker.service.handlers import record_event

SAMPLE_AT = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
SAMPLE_ID, SAMPLE_EVENT, SAMPLE_MERCHANT = "@OID@", "@EID@", "@MID@"
AT_SQL = """to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


@dataclass(frozen=True)
class Template:
    state: str
    """The order's state JSON with @OID@, @EID@, @MID@ and the sample time to substitute."""
    deadlines: list[tuple[str, str, timedelta]]
    """(rule, subject, due_at - created_at) of each row record_event syncs at creation."""


def created_event(order_id: str, event_id: str, merchant_id: str, at: datetime) -> bytes:
    return orjson.dumps(
        {
            "event_id": event_id,
            "type": "order.created",
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "order_id": order_id,
            "merchant_id": merchant_id,
            "items": [{"sku": "sku-001", "quantity": 1}],
            "ship_to": {"country": "CN", "postcode": "518000"},
        }
    )


def template(policy: Policy) -> Template:
    uow = MemoryUnitOfWork()
    event = parse_event(created_event(SAMPLE_ID, SAMPLE_EVENT, SAMPLE_MERCHANT, SAMPLE_AT))
    with uow:
        record_event(event, uow, SAMPLE_AT, policy)
        uow.commit()
        state = uow.orders.lock(SAMPLE_ID).model_dump(mode="json")
    rows = [
        (rule, subject, due_at - SAMPLE_AT)
        for (order_id, rule, subject), (due_at, _state) in uow.deadlines.rows.items()
        if order_id == SAMPLE_ID
    ]
    return Template(orjson.dumps(state).decode(), sorted(rows))


def _state_sql(t: Template) -> str:
    stamp = SAMPLE_AT.isoformat().replace("+00:00", "Z")
    return (
        f"replace(replace(replace(replace(%(state)s, '{stamp}', {AT_SQL}), "
        "'@OID@', oid), '@EID@', 'evt-' || oid), '@MID@', mid)::jsonb"
    )


def load_orders(
    dsn: str,
    t: Template,
    prefix: str,
    count: int,
    first_due: datetime,
    spread: timedelta,
    pending: str = "all",
) -> None:
    """`count` orders whose collection deadline falls from `first_due` over `spread`, evenly.
    pending='all': every row pending (orders just created); 'collection': only the collection
    row pending, the earlier warning rows already fired (orders about to breach)."""
    collection = max(offset for _rule, _subject, offset in t.deadlines)
    step = spread / count
    source = """
        WITH src AS (
          SELECT %(prefix)s || g AS oid, 'm-' || (g %% 1000) AS mid,
                 %(first_created)s::timestamptz + (g - 1) * %(step)s::interval AS created
          FROM generate_series(1, %(count)s) AS g)
    """
    params = {
        "prefix": prefix,
        "count": count,
        "first_created": first_due - collection,
        "step": step,
        "state": t.state,
    }
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            source
            + f"""
            INSERT INTO orders (order_id, merchant_id, created_at, state, updated_at)
            SELECT oid, mid, created, {_state_sql(t)}, now() FROM src""",
            params,
        )
        for rule, subject, offset in t.deadlines:
            state = "pending" if pending == "all" or offset == collection else "fired"
            connection.execute(
                source
                + """
                INSERT INTO deadlines
                    (order_id, merchant_id, rule, subject, due_at, state, updated_at)
                SELECT oid, mid, %(rule)s, %(subject)s, created + %(offset)s::interval,
                       %(state)s, now()
                FROM src""",
                {**params, "rule": rule, "subject": subject, "offset": offset, "state": state},
            )
        connection.execute("ANALYZE orders")
        connection.execute("ANALYZE deadlines")


def load_bare_deadlines(dsn: str, prefix: str, count: int, first_due: datetime) -> None:
    """Pending rows only (no orders), due from `first_due` over 5 days: for the 10M-row run."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            """
            INSERT INTO deadlines (order_id, rule, subject, due_at, state, updated_at)
            SELECT %(prefix)s || g, 'collection_overdue', '',
                   %(first)s::timestamptz + (g %% 432000) * interval '1 second', 'pending', now()
            FROM generate_series(1, %(count)s) AS g""",
            {"prefix": prefix, "count": count, "first": first_due},
        )
        connection.execute("ANALYZE deadlines")


def check_matches(dsn: str) -> None:
    """The bulk rows of order `x-1` equal what the real SQL store wrote through record_event for
    order `r-1` (same merchant, same creation time): same state JSON and deadline rows."""
    with psycopg.connect(dsn) as connection:
        rows = connection.execute(
            "SELECT order_id, state FROM orders WHERE order_id IN ('x-1', 'r-1')"
        ).fetchall()
        deadlines = connection.execute(
            "SELECT order_id, rule, subject, due_at, state FROM deadlines "
            "WHERE order_id IN ('x-1', 'r-1') ORDER BY rule, subject"
        ).fetchall()
    states = {
        oid: orjson.loads(orjson.dumps(state).decode().replace(oid, "@")) for oid, state in rows
    }
    if len(states) != 2 or states["x-1"] != states["r-1"]:
        raise AssertionError(f"bulk state differs from record_event's: {states}")
    by_order: dict[str, list[tuple[object, ...]]] = {}
    for oid, *rest in deadlines:
        by_order.setdefault(oid, []).append(tuple(rest))
    if not by_order.get("x-1") or by_order.get("x-1") != by_order.get("r-1"):
        raise AssertionError(f"bulk deadline rows differ: {by_order}")
