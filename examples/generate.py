"""Generate examples/day-of-orders.jsonl: one day of orders from four merchants, with what
followed over the next week. Deterministic (fixed seed), so the README's output stays true.

    python examples/generate.py > examples/day-of-orders.jsonl
    python examples/generate.py --orders 30000 > /tmp/big.jsonl   # ~100k events, for timing
"""

from __future__ import annotations

import json
import random
import sys
from datetime import UTC, datetime, timedelta

DAY_START = datetime(2026, 11, 11, 0, 0, tzinfo=UTC)  # a sales day, 08:00 in Shanghai
H = timedelta(hours=1)
MERCHANTS = {"acme-us": 0.05, "bluebird": 0.15, "coastal": 0.35, "dune-goods": 0.1}
"""merchant -> how often it ships late (the rest behave)."""


def stamp(at: datetime) -> str:
    return at.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def event(kind: str, order_id: str, at: datetime, **fields: object) -> dict[str, object]:
    event.counter += 1  # type: ignore[attr-defined]
    return {
        "event_id": f"evt-{event.counter:05d}",  # type: ignore[attr-defined]
        "type": kind,
        "occurred_at": stamp(at),
        "order_id": order_id,
        **fields,
    }


event.counter = 0  # type: ignore[attr-defined]


def lifecycle(rng: random.Random, order_id: str, merchant: str, late_rate: float) -> list[dict]:
    created = DAY_START + timedelta(minutes=rng.randrange(24 * 60))
    special = rng.random() < 0.1
    item = {"sku": f"sku-{rng.randrange(100):03d}", "quantity": rng.randint(1, 3)}
    if special:
        item["ship_within_hours"] = 168
    events = [
        event(
            "order.created",
            order_id,
            created,
            merchant_id=merchant,
            items=[item],
            ship_to={"country": "CN", "postcode": f"{rng.randrange(100000, 999999)}"},
        )
    ]
    fate = rng.random()
    waybill = {"waybill_no": f"JD{rng.randrange(10**9):09d}", "carrier": "JD_LOGISTICS"}
    if fate < 0.08:  # consumer cancels before shipping
        asked = created + rng.uniform(1, 20) * H
        review = asked + rng.choice([2, 6, 30]) * H
        decision = rng.choice(["approved", "approved", "rejected"])
        events += [
            event("cancellation.requested", order_id, asked, cancellation_id=f"{order_id}-c1"),
            event(
                "cancellation.reviewed",
                order_id,
                review,
                cancellation_id=f"{order_id}-c1",
                decision=decision,
            ),
        ]
        if decision == "rejected":
            collected = review + 20 * H
            events += [
                event("order.shipped", order_id, review + 2 * H, **waybill),
                *traces(rng, order_id, waybill, _postcode(events), review + 2 * H, collected),
                event("order.collected", order_id, collected, **waybill),
            ]
        return events
    if fate < 0.16:  # stock-out
        declared = created + rng.uniform(2, 30) * H
        events.append(event("order.stockout_declared", order_id, declared))
        if rng.random() < 0.6:
            contact = declared + rng.uniform(1, 30) * H
            new_ship_by = contact + 72 * H
            events.append(
                event(
                    "order.consumer_contacted",
                    order_id,
                    contact,
                    outcome="restock",
                    new_ship_by=stamp(new_ship_by),
                )
            )
            collected = new_ship_by - 5 * H
            shipped = collected - 20 * H
            events.append(event("order.shipped", order_id, shipped, **waybill))
            events += traces(rng, order_id, waybill, _postcode(events), shipped, collected)
            events.append(event("order.collected", order_id, collected, **waybill))
        return events
    late = rng.random() < late_rate
    limit = 168 if special else 120
    shipped = created + rng.uniform(4, 40) * H
    collected = created + (rng.uniform(limit + 1, limit + 30) if late else rng.uniform(50, 110)) * H
    postcode = _postcode(events)
    events += [
        event("order.shipped", order_id, shipped, **waybill),
        *traces(rng, order_id, waybill, postcode, shipped, collected),
        event("order.collected", order_id, collected, **waybill),
    ]
    if rng.random() < 0.04:
        failed = collected + 30 * H
        events += [
            event("customs.clearance_failed", order_id, failed),
            event("refund.completed", order_id, failed + rng.choice([5, 40]) * H),
        ]
    return events


def parse(value: object) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _postcode(events: list[dict[str, object]]) -> str:
    return str(events[0]["ship_to"]["postcode"])  # type: ignore[index]


def traces(
    rng: random.Random,
    order_id: str,
    waybill: dict[str, str],
    postcode: str,
    shipped: datetime,
    collected: datetime,
) -> list[dict[str, object]]:
    """The carrier's trace (3.3): first scan after shipping, then updates until delivery."""
    at = shipped + rng.uniform(2, 12) * H
    found = [trace(order_id, at, waybill, postcode, "in_transit")]
    at = collected + rng.uniform(6, 30) * H
    for _hop in range(rng.randint(1, 3)):
        found.append(trace(order_id, at, waybill, postcode, "in_transit"))
        at += rng.uniform(10, 60) * H
    found.append(trace(order_id, at, waybill, postcode, "delivered"))
    return found


def trace(
    order_id: str, at: datetime, waybill: dict[str, str], postcode: str, status: str
) -> dict[str, object]:
    return event(
        "logistics.tracked", order_id, at, **waybill, status=status, destination_postcode=postcode
    )


def rulebook_cases(rng: random.Random, events: list[dict]) -> None:
    """A handful of orders that break the rest of the rulebook, once each."""
    start = DAY_START + 13 * H

    def order(order_id: str, merchant: str, at: datetime) -> None:
        events.append(
            event(
                "order.created",
                order_id,
                at,
                merchant_id=merchant,
                items=[{"sku": "sku-900", "quantity": 1}],
                ship_to={"country": "CN", "postcode": "200001"},
            )
        )

    jd = {"waybill_no": "JDVB00012345", "carrier": "JD_LOGISTICS"}
    order("ord-9001", "coastal", start)  # 2.1: shipped with another carrier
    sf = {"waybill_no": "SF1234567890", "carrier": "SF_EXPRESS"}
    events.append(event("order.shipped", "ord-9001", start + 5 * H, **sf))
    order("ord-9002", "bluebird", start)  # 3.3(1): a waybill with no trace
    events.append(event("order.shipped", "ord-9002", start + 6 * H, **jd))
    order("ord-9003", "dune-goods", start)  # 3.3(4): the parcel goes elsewhere
    events.append(event("order.shipped", "ord-9003", start + 3 * H, **jd))
    events.append(trace("ord-9003", start + 9 * H, jd, "518000", "in_transit"))
    order("ord-9004", "acme-us", start)  # 2.1.4: refuses to ship unless paid more
    events.append(
        event("merchant.refused_shipment", "ord-9004", start + 20 * H, reason="price_increase")
    )
    for number, severity in enumerate(["slight", "slight", "serious"]):  # 3.1: shortages
        order_id = f"ord-91{number:02d}"
        order(order_id, "bluebird", start + number * H)
        events.append(event("order.collected", order_id, start + (60 + number) * H, **jd))
        events.append(trace(order_id, start + (80 + number) * H, jd, "200001", "delivered"))
        events.append(
            event(
                "complaint.upheld",
                order_id,
                start + (110 + number) * H,
                category="shortage",
                severity=severity,
            )
        )
    events.append(
        event(
            "complaint.upheld", "ord-9100", start + 115 * H, category="packaging", severity="slight"
        )
    )


def main() -> None:
    orders = int(sys.argv[sys.argv.index("--orders") + 1]) if "--orders" in sys.argv else 120
    rng = random.Random(20261111)
    events: list[dict] = []
    for number in range(1, orders + 1):
        merchant = rng.choice(list(MERCHANTS))
        events += lifecycle(rng, f"ord-{number:04d}", merchant, MERCHANTS[merchant])
    rulebook_cases(rng, events)
    events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
    # The warehouse reports one collection scan (made at 119 h) only two days later: slatimer
    # raises the violation at 120 h, then withdraws it when the evidence arrives.
    late_scan = next(e for e in events if e["order_id"] == "ord-0003" and "collected" in e["type"])
    created = next(e for e in events if e["order_id"] == "ord-0003")
    late_scan["occurred_at"] = stamp(parse(created["occurred_at"]) + 119 * H)
    events.remove(late_scan)
    arrival = stamp(parse(late_scan["occurred_at"]) + 48 * H)
    events.insert(next(i for i, e in enumerate(events) if e["occurred_at"] > arrival), late_scan)
    events.insert(len(events) // 2, events[len(events) // 3])  # a redelivered message
    for line in events:
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
