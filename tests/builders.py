"""Event builders for tests: fixed, timezone-aware times; every call gets a fresh event_id."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from models.events import Event, parse_document

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday morning, UTC
H = timedelta(hours=1)
S = timedelta(seconds=1)
DAY = timedelta(days=1)
_ids = itertools.count(1)


def doc(kind: str, order_id: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": fields.pop("event_id", f"ev-{next(_ids)}"),
        "type": kind,
        "occurred_at": at.isoformat(),
        "order_id": order_id,
        **fields,
    }


def event(kind: str, order_id: str, at: datetime, **fields: Any) -> Event:
    return parse_document(doc(kind, order_id, at, **fields))


def created(order_id: str, at: datetime = T0, merchant: str = "m-1", **fields: Any) -> Event:
    items = fields.pop("items", [{"sku": "sku-1", "quantity": 1}])
    ship_to = {"country": "CN", "postcode": "200000"}
    return event(
        "order.created", order_id, at, merchant_id=merchant, items=items, ship_to=ship_to, **fields
    )


def shipped(order_id: str, at: datetime, **fields: Any) -> Event:
    return event(
        "order.shipped", order_id, at, waybill_no="JD0001", carrier="JD_LOGISTICS", **fields
    )


def collected(order_id: str, at: datetime, **fields: Any) -> Event:
    return event(
        "order.collected", order_id, at, waybill_no="JD0001", carrier="JD_LOGISTICS", **fields
    )


def stockout(order_id: str, at: datetime) -> Event:
    return event("order.stockout_declared", order_id, at)


def contacted(order_id: str, at: datetime, new_ship_by: datetime | None = None) -> Event:
    if new_ship_by is None:
        return event("order.consumer_contacted", order_id, at, outcome="consumer_agreed_cancel")
    return event(
        "order.consumer_contacted",
        order_id,
        at,
        outcome="restock",
        new_ship_by=new_ship_by.isoformat(),
    )


def cancel_requested(order_id: str, at: datetime, cancellation_id: str = "c-1") -> Event:
    return event("cancellation.requested", order_id, at, cancellation_id=cancellation_id)


def cancel_reviewed(
    order_id: str, at: datetime, decision: str = "approved", cancellation_id: str = "c-1"
) -> Event:
    return event(
        "cancellation.reviewed", order_id, at, cancellation_id=cancellation_id, decision=decision
    )


def customs_failed(order_id: str, at: datetime) -> Event:
    return event("customs.clearance_failed", order_id, at)


def refunded(order_id: str, at: datetime) -> Event:
    return event("refund.completed", order_id, at)
