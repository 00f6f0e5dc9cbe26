"""`slatimer merchant M`: a merchant's standing — points over the rolling window by category,
the measures reached, and every ledger entry traced to its violation and evidence."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, select

from models.outcomes import iso
from models.policy import Policy
from store.sql.tables import LedgerRow, OutcomeRow


def merchant_standing(
    engine: Engine, policy: Policy, merchant_id: str, now: datetime
) -> dict[str, Any]:
    since = now - policy.standing_window
    timeline = _timeline(engine, merchant_id)
    in_window = [e for e in timeline if since <= e["violation_at"] <= now]
    by_category: dict[str, int] = {}
    for entry in in_window:
        by_category[entry["category"]] = by_category.get(entry["category"], 0) + entry["points"]
    total = sum(by_category.values())
    return {
        "merchant_id": merchant_id,
        "window": {"from": iso(since), "to": iso(now)},
        "points": total,
        "by_category": dict(sorted(by_category.items())),
        "measures": [t.measure for t in policy.standing_thresholds if total >= t.points],
        "timeline": [{**e, "violation_at": iso(e["violation_at"])} for e in timeline],
    }


def _timeline(engine: Engine, merchant_id: str) -> list[dict[str, Any]]:
    """Ledger entries, oldest first, each with the violation it charges or reverses."""
    joined = and_(
        OutcomeRow.order_id == LedgerRow.order_id,
        OutcomeRow.rule == LedgerRow.rule,
        OutcomeRow.subject == LedgerRow.subject,
        OutcomeRow.at == LedgerRow.outcome_at,
        OutcomeRow.kind == "violation",
    )
    query = (
        select(
            LedgerRow.entry,
            LedgerRow.points,
            LedgerRow.at,
            LedgerRow.outcome_at,
            LedgerRow.order_id,
            OutcomeRow.rule,
            OutcomeRow.clause,
            OutcomeRow.category,
            OutcomeRow.severity,
        )
        .join(OutcomeRow, joined)
        .where(LedgerRow.merchant_id == merchant_id)
        .order_by(LedgerRow.at, LedgerRow.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        {
            "entry": row.entry,
            "points": row.points,
            "at": iso(row.at),
            "violation_at": row.outcome_at,
            "order_id": row.order_id,
            "rule": row.rule,
            "clause": row.clause,
            "category": row.category,
            "severity": row.severity,
        }
        for row in rows
    ]
