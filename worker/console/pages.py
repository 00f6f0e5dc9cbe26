"""What each console page shows: its template context, built from read-only queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from statistics import median
from typing import Any

import orjson
from sqlalchemy.orm import Session

from models.outcomes import iso
from models.policy import Policy
from models.rules import RULES
from worker.api import views
from worker.api.store_metrics import deadlines_open, overdue_seconds
from worker.console import queries

LAG_WINDOW = timedelta(hours=1)


def utc_iso(moment: datetime | None) -> str:
    """ISO time in UTC; naive values are UTC (SQLite aggregates drop the zone)."""
    if moment is None:
        return ""
    return iso(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def when(moment: datetime | None) -> str:
    """A time to read: UTC to the second ('2026-03-09 11:00:00'); `utc_iso` is for machines."""
    return utc_iso(moment)[:19].replace("T", " ") if moment is not None else ""


def duration(seconds: float) -> str:
    """'1d 02h 03m', '2h 03m 04s', '3m 04s': what the countdowns print too (console.js)."""
    total = int(abs(seconds))
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def clause_of(rule: str, subject: str = "") -> str:
    """The rulebook clause a clock enforces (3.3's cases carry theirs as the subject)."""
    base = rule.split(":warn:")[0]
    if base == "false_delivery" and subject:
        return subject
    known = RULES.get(base)
    return known.clause if known else ""


def chart_json(data: dict[str, Any]) -> str:
    """Chart data for a `<script type="application/json">`: '<', '>' and '&' escaped, so no
    value (a merchant id) can close the tag."""
    text = orjson.dumps(data).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def merchant(
    db: Session, policy: Policy, merchant_id: str, hours: float, now: datetime
) -> dict[str, Any]:
    risk = views.at_risk(db, merchant_id, hours, now)
    at_risk = sorted(
        (_at_risk_row(order.order_id, clock) for order in risk.orders for clock in order.clocks),
        key=lambda row: (row["due_at"], row["order_id"]),
    )
    series = queries.rolling_points(queries.ledger(db, merchant_id), policy.standing_window, now)
    points = series[-1][1] if series else 0
    thresholds = sorted(policy.standing_thresholds, key=lambda t: t.points)
    chart = {
        "x": [moment.timestamp() for moment, _ in series],
        "points": [total for _, total in series],
        "thresholds": [{"points": t.points, "measure": t.measure} for t in thresholds],
    }
    return {
        "merchant_id": merchant_id,
        "now": now,
        "hours": hours,
        "at_risk": at_risk,
        "points": points,
        "window_days": policy.standing_window / timedelta(days=1),
        "thresholds": thresholds,
        "next": queries.next_threshold(thresholds, points),
        "measures": [t.measure for t in thresholds if points >= t.points],
        "chart": chart_json(chart),
        "alerts": queries.alerts(db, merchant_id),
    }


def _at_risk_row(order_id: str, clock: views.DueClock) -> dict[str, Any]:
    return {**dict(clock), "order_id": order_id, "clause": clause_of(clock.rule, clock.subject)}


def order(db: Session, order_id: str, now: datetime) -> dict[str, Any]:
    view = views.order_view(db, order_id)
    return {"order": view, "now": now, "timeline": timeline(view)}


def timeline(view: views.OrderView) -> list[dict[str, Any]]:
    """Events, clocks, outcomes and retractions of one order, in time order."""
    items: list[dict[str, Any]] = []
    for event in view.evidence:
        body = orjson.dumps(event.body, option=orjson.OPT_SORT_KEYS).decode()
        items.append(_item(event.occurred_at, "event", event.type, body, event.event_id))
    for clock in view.clocks:
        kind = "warning clock" if ":warn:" in clock.rule else "clock"
        title = f"{clock.rule} {clock.subject}".strip()
        detail = f"{clock.state}; clause {clause_of(clock.rule, clock.subject)}"
        items.append(_item(clock.due_at, kind, title, detail, clock.calendar or ""))
    for outcome in view.outcomes:
        points = "" if outcome.points is None else f"{outcome.points:+d} points"
        detail = " ".join(filter(None, [f"clause {outcome.clause}", outcome.severity, points]))
        withdrawn = "withdrawn" if outcome.retracted else ""
        items.append(_item(outcome.at, outcome.kind, outcome.rule, detail, withdrawn))
        if outcome.retraction is not None:
            title = f"{outcome.rule} withdrawn"
            r = outcome.retraction
            items.append(_item(r.at, "retraction", title, r.evidence, f"clause {outcome.clause}"))
    return sorted(items, key=lambda item: item["at"])


def _item(at: datetime, kind: str, title: str, detail: str, note: str) -> dict[str, Any]:
    return {"at": at, "kind": kind, "title": title, "detail": detail, "note": note}


def operator(db: Session, policy: Policy, now: datetime) -> dict[str, Any]:
    connection = db.connection()
    lag = queries.fired_lag(db, now - LAG_WINDOW, now)
    backlog: dict[str, dict[str, int]] = {}
    for labels, count in queries.gauge(deadlines_open(connection)):
        backlog.setdefault(labels["rule"], {})[labels["state"]] = int(count)
    dlq_waiting, dlq = queries.dead_letters(db)
    return {
        "now": now,
        "overdue": {s["state"]: v for s, v in queries.gauge(overdue_seconds(connection, now))},
        "fired": len(lag),
        "lag_median": median(seconds for _, seconds in lag) if lag else 0.0,
        "lag_max": max((seconds for _, seconds in lag), default=0.0),
        "lag_chart": chart_json(
            {"x": [due.timestamp() for due, _ in lag], "lag": [s for _, s in lag]}
        ),
        "backlog": sorted(backlog.items()),
        "dlq_waiting": dlq_waiting,
        "dlq": dlq,
        "alerts": queries.alerts(db, failed_only=True),
        "oldest_pending_alert": queries.oldest_pending_alert(db),
        "nearest": queries.nearest_measure(db, policy, now),
    }
