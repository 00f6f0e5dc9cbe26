"""The obvious design, as the baseline: every order event goes straight to Celery on Redis as
`apply_async(eta=deadline)` (120 h ahead) with Celery's default settings, and the task checks the
order's state in PostgreSQL when it fires. No deadline table, no horizon, no grouping.

    python -m bench.baselines.naive ingest   # order queue -> naive_orders + an ETA task per clock
    celery -A bench.baselines.naive worker     # runs the ETA tasks (default settings)

Configured by environment: BENCH_NAIVE_DSN (psycopg), BENCH_NAIVE_BROKER (redis://…),
BENCH_NAIVE_QUEUE (its Celery queue), BENCH_NAIVE_ORDERS (the order queue, kombu envelope),
BENCH_NAIVE_VISIBILITY (optional: a short Redis visibility_timeout, to make re-runs observable).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import kombu
import orjson
import psycopg
from celery import Celery

COLLECTION = timedelta(hours=120)
SCHEMA = """
CREATE TABLE IF NOT EXISTS naive_events (
  event_id text PRIMARY KEY, order_id text NOT NULL, type text NOT NULL,
  occurred_at timestamptz NOT NULL, body jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS naive_orders (
  order_id text PRIMARY KEY, created_at timestamptz, collected boolean NOT NULL DEFAULT false);
CREATE TABLE IF NOT EXISTS naive_runs (
  id bigserial PRIMARY KEY, order_id text NOT NULL, due_at timestamptz NOT NULL,
  lateness_s double precision NOT NULL, violation boolean NOT NULL,
  ran_at timestamptz NOT NULL DEFAULT clock_timestamp());
"""


def make_app() -> Celery:
    """Celery's defaults, except the queue name (shared broker) and, when asked, the
    visibility timeout (default 1 h; shortened only to show the re-run within seconds)."""
    celery = Celery("naive", broker=os.environ.get("BENCH_NAIVE_BROKER", "redis://"))
    celery.conf.task_default_queue = os.environ.get("BENCH_NAIVE_QUEUE", "naive")
    celery.conf.worker_hijack_root_logger = False
    visibility = os.environ.get("BENCH_NAIVE_VISIBILITY")
    if visibility:
        # kombu scans for expired messages every 10th tick of 10 s: tick every second instead
        celery.conf.broker_transport_options = {
            "visibility_timeout": float(visibility),
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
        }
    return celery


app = make_app()


@cache
def database() -> psycopg.Connection[Any]:
    return psycopg.connect(os.environ["BENCH_NAIVE_DSN"], autocommit=True)


@app.task(name="naive.check_deadline")
def check_deadline(order_id: str, due_at: str) -> None:
    """When the ETA comes: re-read the order; no collection by then is a violation."""
    due = datetime.fromisoformat(due_at)
    lateness = time.time() - due.timestamp()
    db = database()
    row = db.execute("SELECT collected FROM naive_orders WHERE order_id = %s", (order_id,))
    found = row.fetchone()
    violation = found is not None and not found[0]
    db.execute(
        "INSERT INTO naive_runs (order_id, due_at, lateness_s, violation) VALUES (%s, %s, %s, %s)",
        (order_id, due, lateness, violation),
    )


def handle(db: psycopg.Connection[Any], body: bytes) -> None:
    """One event, one autocommit statement or two, one ETA task per clock it starts."""
    event = orjson.loads(body)
    at = datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00"))
    db.execute(
        "INSERT INTO naive_events VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (event["event_id"], event["order_id"], event["type"], at, body.decode()),
    )
    if event["type"] == "order.created":
        db.execute(
            "INSERT INTO naive_orders (order_id, created_at) VALUES (%s, %s) "
            "ON CONFLICT DO NOTHING",
            (event["order_id"], at),
        )
        due = (at + COLLECTION).isoformat()
        check_deadline.apply_async(args=[event["order_id"], due], eta=at + COLLECTION)
    elif event["type"] == "order.collected":
        db.execute(
            "UPDATE naive_orders SET collected = true WHERE order_id = %s", (event["order_id"],)
        )


def ingest() -> None:
    """Consume the order queue (kombu, same envelope as slatimer's) until SIGTERM."""
    db = database()
    queue = kombu.Queue(os.environ["BENCH_NAIVE_ORDERS"])

    def on_message(message: Any) -> None:
        handle(db, message.body if isinstance(message.body, bytes) else message.body.encode())
        message.ack()

    with kombu.Connection(os.environ["BENCH_NAIVE_BROKER"]) as connection:
        with connection.Consumer([queue], on_message=on_message, prefetch_count=500):
            while True:
                try:
                    connection.drain_events(timeout=1)
                except TimeoutError:
                    continue


if __name__ == "__main__":
    if sys.argv[1:] == ["ingest"]:
        ingest()
    elif sys.argv[1:] == ["schema"]:
        database().execute(SCHEMA)
