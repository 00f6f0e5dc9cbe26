"""The read side of the API: response shapes and the queries that fill them.

Plain read-only SELECTs on a session, apart from the unit of work: the API never changes state,
so it needs no aggregate, lock or handler (cosmicpython's "views" pattern).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, field_validator
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store.sql.tables import (
    DeadlineRow,
    InboxRow,
    LedgerRow,
    MerchantRow,
    OrderRow,
    OutcomeRow,
    RetractionRow,
)

OPEN_STATES = ("pending", "enqueued")
WARNING_CLOCK = "%:warn:%"
"""Pre-breach warning clocks (`rule:warn:86400s`) are reminders, not obligations."""


class Clock(BaseModel):
    rule: str
    subject: str
    due_at: datetime
    state: str
    """pending | enqueued (a timer holds it) | fired | met"""
    calendar: str | None = None
    """A working-time clock's calendar in force (IPR, customer service)."""
    paused: list[tuple[datetime, datetime]] = []
    """Stretches [from, until] a declared closure paused the clock for."""

    @field_validator("paused", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class Retraction(BaseModel):
    at: datetime
    evidence: str


class OutcomeView(BaseModel):
    id: int
    kind: str
    order_id: str
    merchant_id: str | None
    rule: str
    clause: str
    category: str | None
    subject: str
    at: datetime
    severity: str | None
    points: int | None
    retracted: bool
    retraction: Retraction | None = None


class Evidence(BaseModel):
    event_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    body: dict[str, Any]


class OrderView(BaseModel):
    order_id: str
    merchant_id: str | None
    created_at: datetime | None
    clocks: list[Clock]
    outcomes: list[OutcomeView]
    evidence: list[Evidence]
    """The events received for the order, in occurred_at order."""


class Violations(BaseModel):
    merchant_id: str
    violations: list[OutcomeView]


class LedgerEntry(BaseModel):
    order_id: str
    rule: str
    subject: str
    entry: str
    """charge | reversal"""
    points: int
    outcome_at: datetime
    at: datetime


class Points(BaseModel):
    merchant_id: str
    total: int
    entries: list[LedgerEntry]


class DueClock(BaseModel):
    rule: str
    subject: str
    due_at: datetime
    due_in_seconds: float


class AtRiskOrder(BaseModel):
    order_id: str
    clocks: list[DueClock]


class AtRisk(BaseModel):
    merchant_id: str
    hours: float
    as_of: datetime
    orders: list[AtRiskOrder]


def order_merchant(session: Session, order_id: str) -> tuple[bool, str | None]:
    """(whether the order exists, its merchant)."""
    row = session.execute(
        select(OrderRow.merchant_id).where(OrderRow.order_id == order_id)
    ).one_or_none()
    return (False, None) if row is None else (True, row[0])


def merchant_exists(session: Session, merchant_id: str) -> bool:
    known = select(MerchantRow.merchant_id).where(MerchantRow.merchant_id == merchant_id)
    ordered = select(OrderRow.order_id).where(OrderRow.merchant_id == merchant_id).limit(1)
    return session.scalar(known) is not None or session.scalar(ordered) is not None


def order_view(session: Session, order_id: str) -> OrderView:
    order = session.get(OrderRow, order_id)
    assert order is not None
    clocks = session.scalars(
        select(DeadlineRow)
        .where(DeadlineRow.order_id == order_id)
        .order_by(DeadlineRow.due_at, DeadlineRow.id)
    )
    events = session.scalars(
        select(InboxRow)
        .where(InboxRow.order_id == order_id)
        .order_by(InboxRow.occurred_at, InboxRow.received_at)
    )
    return OrderView(
        order_id=order_id,
        merchant_id=order.merchant_id,
        created_at=order.created_at,
        clocks=[Clock.model_validate(row, from_attributes=True) for row in clocks],
        outcomes=_outcomes(session, OutcomeRow.order_id == order_id),
        evidence=[Evidence.model_validate(row, from_attributes=True) for row in events],
    )


def _outcomes(session: Session, *where: Any, limit: int | None = None) -> list[OutcomeView]:
    query = (
        select(OutcomeRow, RetractionRow)
        .outerjoin(RetractionRow, RetractionRow.outcome_id == OutcomeRow.id)
        .where(*where)
        .order_by(OutcomeRow.at, OutcomeRow.id)
        .limit(limit)
    )
    found = []
    for outcome, retraction in session.execute(query):
        view = OutcomeView.model_validate(outcome, from_attributes=True)
        if retraction is not None:
            view.retraction = Retraction(at=retraction.at, evidence=retraction.evidence)
        found.append(view)
    return found


def violations(session: Session, merchant_id: str, limit: int) -> Violations:
    where = (OutcomeRow.merchant_id == merchant_id, OutcomeRow.kind == "violation")
    return Violations(merchant_id=merchant_id, violations=_outcomes(session, *where, limit=limit))


def points(session: Session, merchant_id: str, limit: int) -> Points:
    mine = LedgerRow.merchant_id == merchant_id
    total = session.scalar(select(func.coalesce(func.sum(LedgerRow.points), 0)).where(mine))
    query = select(LedgerRow).where(mine).order_by(LedgerRow.at, LedgerRow.id).limit(limit)
    entries = [
        LedgerEntry.model_validate(row, from_attributes=True) for row in session.scalars(query)
    ]
    return Points(merchant_id=merchant_id, total=int(total or 0), entries=entries)


def at_risk(session: Session, merchant_id: str, hours: float, now: datetime) -> AtRisk:
    """Orders with a deadline still open and due between now and `hours` from now: what the
    merchant can still act on (a deadline already past will fire whatever they do now)."""
    until = now + timedelta(hours=hours)
    query = (
        select(DeadlineRow)
        .join(OrderRow, OrderRow.order_id == DeadlineRow.order_id)
        .where(
            OrderRow.merchant_id == merchant_id,
            DeadlineRow.state.in_(OPEN_STATES),
            DeadlineRow.rule.not_like(WARNING_CLOCK),
            DeadlineRow.due_at >= now,
            DeadlineRow.due_at <= until,
        )
        .order_by(DeadlineRow.due_at, DeadlineRow.id)
    )
    orders: dict[str, AtRiskOrder] = {}
    for row in session.scalars(query):
        order = orders.setdefault(row.order_id, AtRiskOrder(order_id=row.order_id, clocks=[]))
        due_in = (row.due_at - now).total_seconds()
        order.clocks.append(
            DueClock(rule=row.rule, subject=row.subject, due_at=row.due_at, due_in_seconds=due_in)
        )
    return AtRisk(merchant_id=merchant_id, hours=hours, as_of=now, orders=list(orders.values()))
