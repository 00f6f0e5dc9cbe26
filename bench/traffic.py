"""What the workloads put on the wire: order events, and a fast way to queue many of them."""

from __future__ import annotations

import base64
import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import orjson
import redis

from bench.load import created_event

KINDS = {"order.shipped": 0.5, "order.collected": 0.25}
"""Of the orders created, the share that also ship, and that are also collected (in the hour)."""


def order_events(count: int, prefix: str, now: datetime, seed: int = 7) -> list[bytes]:
    """`count` events of orders created in the last hour: every order is created, half are
    shipped, a quarter collected (about 1.75 events per order), all with occurred_at <= now."""
    rng = random.Random(seed)
    events: list[bytes] = []
    number = 0
    while len(events) < count:
        number += 1
        order_id = f"{prefix}{number}"
        at = now - timedelta(seconds=rng.uniform(120, 3600))
        events.append(created_event(order_id, f"{order_id}-c", f"m-{number % 1000}", at))
        roll = rng.random()
        for kind, share in KINDS.items():
            if roll < share:
                at += timedelta(seconds=rng.uniform(1, 50))
                events.append(_tracking(kind, order_id, at))
    return events[:count]


def _tracking(kind: str, order_id: str, at: datetime) -> bytes:
    return orjson.dumps(
        {
            "event_id": f"{order_id}-{kind[6:]}",
            "type": kind,
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "order_id": order_id,
            "waybill_no": "JD000000001",
            "carrier": "JD_LOGISTICS",
        }
    )


def push(client: redis.Redis, queue: str, exchange: str, key: str, bodies: Sequence[bytes]) -> None:
    """LPUSH the bodies in kombu's Redis envelope (what `publish_events` writes, byte for byte
    but for the delivery tag), 5,000 per pipeline: queueing 200,000 takes seconds, not minutes.
    The first body should have gone through `publish_events`, which declares the binding."""
    for start in range(0, len(bodies), 5000):
        pipe = client.pipeline(transaction=False)
        for body in bodies[start : start + 5000]:
            pipe.lpush(queue, orjson.dumps(_envelope(body, exchange, key)))
        pipe.execute()


def _envelope(body: bytes, exchange: str, key: str) -> dict[str, object]:
    return {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {},
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": exchange, "routing_key": key},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
