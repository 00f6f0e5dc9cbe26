"""Read-only queries only the console's pages need; the rest are worker.api's views and gauges.

Plain SELECTs on a session, like worker.api.views: the console never changes state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.policy import Policy, Threshold
from store.sql.tables import AlertRow, DeadLetterRow, DeadlineRow, LedgerRow
from worker.api.store_metrics import ALERT_STATES

RECENT = 50
"""Rows a list on a page shows at most (newest first)."""


@dataclass(frozen=True)
class Alerts:
    by_state: dict[str, int]
    recent: list[AlertRow]
    """The newest alerts, failures and deliveries alike."""


def alerts(session: Session, merchant_id: str | None = None, failed_only: bool = False) -> Alerts:
    """Alert outbox counts by state and its newest rows (one merchant's, or everyone's)."""
    mine = [] if merchant_id is None else [AlertRow.merchant_id == merchant_id]
    counts = dict(
        session.execute(
            select(AlertRow.state, func.count()).where(*mine).group_by(AlertRow.state)
        ).all()
    )
    states = sorted(set(ALERT_STATES) | set(counts))
    by_state = {state: int(counts.get(state, 0)) for state in states}
    if failed_only:
        mine.append(AlertRow.last_error.is_not(None))
    recent = session.scalars(
        select(AlertRow).where(*mine).order_by(AlertRow.id.desc()).limit(RECENT)
    ).all()
    return Alerts(by_state=by_state, recent=list(recent))


def rolling_points(
    entries: Iterable[tuple[datetime, datetime, int]], window: timedelta, now: datetime
) -> list[tuple[datetime, int]]:
    """A merchant's standing over time, as `slatimer merchant` counts it at each moment: the
    points of ledger entries recorded by then whose violation lies within the window. Steps
    at each entry and where a violation leaves the window. `entries`: (violation at, recorded
    at, points)."""
    rows = list(entries)
    leaves = [v + window + timedelta(microseconds=1) for v, _a, _p in rows]  # the window is closed
    moments = {now, *(at for _v, at, _p in rows), *leaves}
    series = []
    for moment in sorted(m for m in moments if m <= now):
        total = sum(p for v, at, p in rows if at <= moment and moment - window <= v <= moment)
        series.append((moment, total))
    return series


def ledger(session: Session, merchant_id: str) -> list[tuple[datetime, datetime, int]]:
    query = (
        select(LedgerRow.outcome_at, LedgerRow.at, LedgerRow.points)
        .where(LedgerRow.merchant_id == merchant_id)
        .order_by(LedgerRow.at, LedgerRow.id)
    )
    return [(row.outcome_at, row.at, row.points) for row in session.execute(query)]


def next_threshold(thresholds: Sequence[Threshold], points: int) -> Threshold | None:
    return next((t for t in sorted(thresholds, key=lambda t: t.points) if t.points > points), None)


@dataclass(frozen=True)
class Standing:
    merchant_id: str
    points: int
    next: Threshold | None

    @property
    def to_go(self) -> int | None:
        return None if self.next is None else self.next.points - self.points


def nearest_measure(session: Session, policy: Policy, now: datetime) -> list[Standing]:
    """Merchants with points in the rolling window, nearest their next measure first (those
    past the last measure lead: nothing is left to go)."""
    query = (
        select(LedgerRow.merchant_id, func.sum(LedgerRow.points))
        .where(LedgerRow.outcome_at >= now - policy.standing_window, LedgerRow.outcome_at <= now)
        .group_by(LedgerRow.merchant_id)
    )
    found = [
        Standing(merchant, int(total), next_threshold(policy.standing_thresholds, int(total)))
        for merchant, total in session.execute(query)
        if total
    ]
    found.sort(key=lambda s: (s.to_go if s.to_go is not None else -1, s.merchant_id))
    return found[:RECENT]


def fired_lag(session: Session, since: datetime, now: datetime) -> list[tuple[datetime, float]]:
    """(due at, seconds it fired after that) for each deadline due in [since, now] that fired:
    a fired row's updated_at is the moment its timer judged it."""
    query = (
        select(DeadlineRow.due_at, DeadlineRow.updated_at)
        .where(DeadlineRow.state == "fired", DeadlineRow.due_at >= since, DeadlineRow.due_at <= now)
        .order_by(DeadlineRow.due_at)
    )
    return [(due, max((fired - due).total_seconds(), 0.0)) for due, fired in session.execute(query)]


def dead_letters(session: Session) -> tuple[int, list[DeadLetterRow]]:
    """How many dead letters wait for `dlq replay`, and the newest of them."""
    waiting = DeadLetterRow.replayed_at.is_(None)
    count = session.scalar(select(func.count()).select_from(DeadLetterRow).where(waiting)) or 0
    newest = session.scalars(
        select(DeadLetterRow).where(waiting).order_by(DeadLetterRow.id.desc()).limit(RECENT)
    ).all()
    return int(count), list(newest)


def oldest_pending_alert(session: Session) -> datetime | None:
    return session.scalar(select(func.min(AlertRow.created_at)).where(AlertRow.state == "pending"))


def gauge(family: Any) -> list[tuple[dict[str, str], float]]:
    """A store gauge's samples as (labels, value): the API's /metrics queries, read directly."""
    return [(dict(sample.labels), sample.value) for sample in family.samples]
