"""The alert outbox and merchants' endpoints, in SQL (SQLite and PostgreSQL alike).

The outbox rows are written by the service layer with their outcome
(`store.sql.repositories.SqlAlerts`); this module is the delivery side: claim what is due (per
order, in id order), record each attempt, park what cannot go out, and the operators' commands
(`merchants …`, `alerts …`).

An alert in flight stays `pending` with `next_attempt_at` pushed out by a lease: the partial
index on pending alerts serves the claim query alone, and a task that is lost simply lets the
lease run out, after which the alert is claimed again. `attempts` fences late task results.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, and_, exists, select, text, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from store.sql.engine import on_postgresql
from store.sql.tables import AlertRow, MerchantRow

PARKED = ("failed", "disabled")
INDEX_ORDERED_PLAN = ("enable_sort", "enable_hashjoin", "enable_mergejoin")


@dataclass(frozen=True)
class DueAlert:
    id: int
    alert_id: str
    merchant_id: str
    order_id: str
    attempts: int


@dataclass(frozen=True)
class Merchant:
    """A merchant's endpoint. Secrets are left out of repr so a log or traceback never shows
    them."""

    merchant_id: str
    webhook_url: str | None
    enabled: bool
    disabled_reason: str | None
    secret: str | None = field(default=None, repr=False)
    previous_secret: str | None = field(default=None, repr=False)
    secret_rotated_at: datetime | None = None


@dataclass(frozen=True)
class Alert:
    id: int
    alert_id: str
    merchant_id: str
    order_id: str
    kind: str
    state: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    body: dict[str, Any]
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


@contextmanager
def outbox(engine: Engine) -> Iterator[SqlOutbox]:
    """One transaction over the outbox: committed on success, rolled back on any error."""
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    with sessions.begin() as session:
        yield SqlOutbox(session)


def due_alerts(now: datetime, limit: int) -> Select[int, str, str, str, int]:
    """The relay's claim. Each half has its own index (migration 0009): `ix_alerts_due`
    yields pending alerts in the ORDER BY's own order, so the LIMIT stops the scan, and
    `ix_alerts_pending_order` answers "an earlier pending alert of the same order?" with one
    probe per candidate."""
    earlier = aliased(AlertRow)
    blocked = exists().where(
        earlier.order_id == AlertRow.order_id,
        earlier.id < AlertRow.id,
        earlier.state == "pending",
    )
    return (
        select(
            AlertRow.id,
            AlertRow.alert_id,
            AlertRow.merchant_id,
            AlertRow.order_id,
            AlertRow.attempts,
        )
        .where(AlertRow.state == "pending", AlertRow.next_attempt_at <= now, ~blocked)
        .order_by(AlertRow.next_attempt_at, AlertRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=AlertRow)
    )


@contextmanager
def _index_ordered_plan(session: Session) -> Iterator[None]:
    """Keep PostgreSQL's planner on the claim's index-ordered plan for one statement.

    The planner chooses between that plan and "every due alert, sorted" (or hash-anti-joined
    against every pending one) by its estimate of how many alerts are pending, and a
    sales-day wave makes the estimate stale by tens of thousands of rows within seconds
    (autovacuum re-analyzes only after 10% of a table has changed). The other plans then read
    the whole backlog on every claim, 27-55 ms per 100 alerts at a 20,000 backlog against
    ~2 ms, so draining a backlog costs the square of its size. With sorting and hash and
    merge joins off, only the index-ordered plan is left. The settings are local to the
    transaction, and the values in force before are put back as soon as the claim has run."""
    if not on_postgresql(session):
        yield
        return
    current = ", ".join(f"current_setting('{name}')" for name in INDEX_ORDERED_PLAN)
    before = session.execute(text(f"SELECT {current}")).one()
    _set_locally(session, ["off"] * len(INDEX_ORDERED_PLAN))
    yield  # on an error the transaction rolls back, and SET LOCAL with it
    _set_locally(session, before)


def _set_locally(session: Session, values: Sequence[str]) -> None:
    """INDEX_ORDERED_PLAN's settings to `values`, in one statement (`set_config(..., true)` is
    SET LOCAL)."""
    calls = ", ".join(
        f"set_config('{name}', :value_{i}, true)" for i, name in enumerate(INDEX_ORDERED_PLAN)
    )
    session.execute(text(f"SELECT {calls}"), {f"value_{i}": v for i, v in enumerate(values)})


class SqlOutbox:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- the relay ---------------------------------------------------------------------------

    def due(self, now: datetime, limit: int) -> list[DueAlert]:
        """Pending alerts whose time has come, locked (SKIP LOCKED), skipping any whose order
        has an earlier alert still pending or in flight: a receiver sees an order's alerts in
        the order they were raised."""
        with _index_ordered_plan(self.session):
            return [DueAlert(*row) for row in self.session.execute(due_alerts(now, limit))]

    def lease(self, ids: Collection[int], until: datetime) -> None:
        """Claim: count the attempt and hide the alert from the relay until the lease ends."""
        self._update(
            AlertRow.id.in_(list(ids)),
            attempts=AlertRow.attempts + 1,
            next_attempt_at=until,
        )

    def postpone(self, ids: Collection[int], until: datetime) -> None:
        self._update(AlertRow.id.in_(list(ids)), next_attempt_at=until)

    def park(self, ids: Collection[int], state: str, reason: str) -> None:
        self._update(AlertRow.id.in_(list(ids)), state=state, last_error=reason[:512])

    # --- one delivery ------------------------------------------------------------------------

    def alert(self, alert_id: str) -> Alert | None:
        row = self.session.scalar(select(AlertRow).where(AlertRow.alert_id == alert_id))
        return _alert(row) if row else None

    def record(
        self, alert_id: str, attempt: int, lease: datetime, state: str, **values: Any
    ) -> bool:
        """Record the result of the claim (`attempt`, `lease`), unless it is no longer current:
        a later claim took the alert over, or this claim's result is already recorded (a
        duplicate task). Returns whether it was recorded."""
        fence = and_(AlertRow.alert_id == alert_id, *claim_is_current(attempt, lease))
        return self._update(fence, state=state, **values) > 0

    def record_delivered(self, alert_id: str, status: int, at: datetime) -> bool:
        """Delivered is delivered, whichever attempt's task says so."""
        where = and_(AlertRow.alert_id == alert_id, AlertRow.state == "pending")
        values = {"last_status": status, "last_error": None, "delivered_at": at}
        return self._update(where, state="delivered", **values) > 0

    def _update(self, where: Any, **values: Any) -> int:
        result = self.session.execute(
            update(AlertRow)
            .where(where)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

    # --- merchants ---------------------------------------------------------------------------

    def merchants(self, ids: Collection[str]) -> dict[str, Merchant]:
        rows = self.session.scalars(
            select(MerchantRow).where(MerchantRow.merchant_id.in_(list(ids)))
        )
        return {row.merchant_id: _merchant(row) for row in rows}

    def merchant(self, merchant_id: str) -> Merchant | None:
        return self.merchants([merchant_id]).get(merchant_id)

    def all_merchants(self) -> list[Merchant]:
        rows = self.session.scalars(select(MerchantRow).order_by(MerchantRow.merchant_id))
        return [_merchant(row) for row in rows]

    def save_endpoint(self, merchant_id: str, url: str, secret: str | None) -> bool:
        """Create or update the merchant's endpoint (a new secret only if given). Returns
        whether it had no endpoint before."""
        row = self.session.get(MerchantRow, merchant_id, with_for_update=True)
        if row is None:
            row = MerchantRow(merchant_id=merchant_id, enabled=True)
            self.session.add(row)
        had_none = row.webhook_url is None
        row.webhook_url = url
        if secret is not None:
            row.secret = secret
        return had_none

    def rotate_secret(self, merchant_id: str, secret: str, at: datetime) -> bool:
        row = self.session.get(MerchantRow, merchant_id, with_for_update=True)
        if row is None:
            return False
        row.previous_secret, row.secret, row.secret_rotated_at = row.secret, secret, at
        return True

    def disable(self, merchant_id: str, reason: str) -> None:
        """The endpoint is gone (410): stop sending and park everything still waiting."""
        self.session.execute(
            update(MerchantRow)
            .where(MerchantRow.merchant_id == merchant_id)
            .values(enabled=False, disabled_reason=reason[:512])
        )
        where = and_(AlertRow.merchant_id == merchant_id, AlertRow.state == "pending")
        self._update(where, state="disabled", last_error=reason[:512])

    def enable(self, merchant_id: str, now: datetime) -> int | None:
        """Re-enable the endpoint and send its parked alerts again: how many (None: unknown)."""
        found = self.session.execute(
            update(MerchantRow)
            .where(MerchantRow.merchant_id == merchant_id)
            .values(enabled=True, disabled_reason=None)
        )
        if not found.rowcount:  # type: ignore[attr-defined]
            return None
        where = and_(AlertRow.merchant_id == merchant_id, AlertRow.state == "disabled")
        return self._update(where, **_fresh(now))

    def release(self, merchant_id: str, now: datetime) -> int:
        """Alerts that waited for an endpoint go out now rather than at their next look."""
        where = and_(
            AlertRow.merchant_id == merchant_id,
            AlertRow.state == "pending",
            AlertRow.next_attempt_at > now,
        )
        return self._update(where, next_attempt_at=now)

    # --- operators ---------------------------------------------------------------------------

    def listing(self, failed_only: bool, merchant_id: str | None, limit: int) -> list[Alert]:
        query = select(AlertRow).order_by(AlertRow.id.desc()).limit(limit)
        if failed_only:
            query = query.where(AlertRow.state == "failed")
        if merchant_id:
            query = query.where(AlertRow.merchant_id == merchant_id)
        return [_alert(row) for row in self.session.scalars(query)]

    def retry(self, alert_ids: Sequence[str] | None, now: datetime) -> int:
        """Parked alerts back to pending with a fresh schedule (`None`: every failed one)."""
        if alert_ids is None:
            where = AlertRow.state == "failed"
        else:
            where = and_(AlertRow.alert_id.in_(list(alert_ids)), AlertRow.state.in_(PARKED))
        return self._update(where, **_fresh(now))


def claim_is_current(attempt: int, lease: datetime) -> tuple[Any, ...]:
    """A claim is identified by its attempt number and its lease end, together."""
    return (
        AlertRow.state == "pending",
        AlertRow.attempts == attempt,
        AlertRow.next_attempt_at == lease,
    )


def _fresh(now: datetime) -> dict[str, Any]:
    return {"state": "pending", "attempts": 0, "next_attempt_at": now, "last_error": None}


def _merchant(row: MerchantRow) -> Merchant:
    return Merchant(
        merchant_id=row.merchant_id,
        webhook_url=row.webhook_url,
        enabled=row.enabled,
        disabled_reason=row.disabled_reason,
        secret=row.secret,
        previous_secret=row.previous_secret,
        secret_rotated_at=row.secret_rotated_at,
    )


def _alert(row: AlertRow) -> Alert:
    return Alert(
        id=row.id,
        alert_id=row.alert_id,
        merchant_id=row.merchant_id,
        order_id=row.order_id,
        kind=row.kind,
        state=row.state,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        body=row.body,
        last_status=row.last_status,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
    )
