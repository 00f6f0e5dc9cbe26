"""`slatimer ingest` on real brokers (Redis, RabbitMQ, the embedded transport) and PostgreSQL:
good events recorded once, bad ones dead-lettered with the field, everything acknowledged;
nothing acknowledged while the database is down; dead letters re-driven by `dlq replay`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from sqlalchemy import Engine, select

from config.settings import Settings
from models.events import MAX_EVENT_BYTES
from store.sql.tables import DeadLetterRow, DeadlineRow, InboxRow
from tests.builders import T0, H, doc
from tests.integration.conftest import OrderQueue
from worker.ingest.consumer import Ingestor, publish_events
from worker.service.bootstrap import bootstrap

pytestmark = pytest.mark.integration

SLATIMER = Path(sys.executable).with_name("slatimer")
ROOT = Path(__file__).resolve().parents[2]
PICKLE = "application/x-python-serialize"
CLOSED_PORT_DB = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"


def created(event_id: str, order_id: str, **changes: Any) -> bytes:
    document = doc(
        "order.created",
        order_id,
        T0,
        event_id=event_id,
        merchant_id="m-1",
        items=[{"sku": "sku-1", "quantity": 1}],
        ship_to={"country": "CN", "postcode": "200000"},
    )
    return orjson.dumps({**document, **changes})


def collected(event_id: str, order_id: str) -> bytes:
    document = doc(
        "order.collected", order_id, T0 + H, event_id=event_id, waybill_no="W1", carrier="JD"
    )
    return orjson.dumps(document)


def slatimer(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SLATIMER), *args], env=env, cwd=ROOT, capture_output=True, timeout=timeout
    )


def database_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def ingest_once(queue: OrderQueue) -> dict[str, Any]:
    done = slatimer("ingest", "--once", env=queue.env)
    assert done.returncode == 0, done.stderr.decode()
    return dict(orjson.loads(done.stdout.splitlines()[-1]))


def dead_letters(engine: Engine) -> list[DeadLetterRow]:
    with engine.connect() as connection:
        return list(connection.execute(select(DeadLetterRow).order_by(DeadLetterRow.id)).all())


# (label, body, content type, the field its dead letter must name, a piece of the reason)
BAD = {
    "invalid JSON": (b'{"event_id": "bad-1", ', None, "(message)", "not valid JSON"),
    "wrong types": (
        created("bad-2", "o-x", items=[{"sku": "a", "quantity": "1"}]),
        None,
        "items.0.quantity",
        "valid integer",
    ),
    "unknown type": (created("bad-3", "o-x", type="order.lost"), None, "type", "unknown"),
    "naive timestamp": (
        created("bad-4", "o-x", occurred_at="2026-03-02T09:00:00"),
        None,
        "occurred_at",
        "timezone",
    ),
    "oversize": (
        created("bad-5", "o-x", merchant_id="m" * MAX_EVENT_BYTES),
        None,
        "(message)",
        "larger than",
    ),
    "pickle": (b"\x80\x04\x95\x0c\x00.", PICKLE, "(content_type)", PICKLE),
    "reused event_id": (created("good-1", "o-other"), None, "event_id", "'good-1'"),
}


def test_the_cli_records_good_events_once_and_dead_letters_each_bad_one(
    broker_url: str, pg_engine: Engine, make_order_queue: Any, tmp_path: Path
) -> None:
    queue: OrderQueue = make_order_queue(broker_url, database_url(pg_engine))
    goods = [created(f"good-{n}", f"o-{n}") for n in range(1, 7)] + [collected("good-7", "o-1")]
    # Given good and bad messages interleaved, published by `slatimer publish` and kombu
    # (the pickle one declares its content type), and a good one published twice
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    bad = [body for body, content_type, *_ in BAD.values() if content_type is None]
    first.write_bytes(b"\n".join([goods[0], bad[0], goods[1], bad[1], goods[2], bad[2]]) + b"\n\n")
    second.write_bytes(b"\n".join([goods[3], bad[3], goods[4], bad[4], goods[5], bad[5]]))
    published = slatimer("publish", str(first), env=queue.env)
    assert published.returncode == 0, published.stderr.decode()
    publish_events(broker_url, [BAD["pickle"][0]], queue.settings, content_type=PICKLE)
    assert slatimer("publish", str(second), env=queue.env).returncode == 0
    publish_events(broker_url, [goods[6], goods[0]], queue.settings)
    assert queue.depth() == 15
    # When `slatimer ingest --once` runs
    counts = ingest_once(queue)
    # Then every good event is in the inbox once, each bad one is a dead letter naming its field
    assert (counts["received"], counts["accepted"], counts["dead_lettered"]) == (15, 8, 7)
    with pg_engine.connect() as connection:
        inbox = list(connection.scalars(select(InboxRow.event_id)))
    assert sorted(inbox) == [f"good-{n}" for n in range(1, 8)]
    letters = {row.body: row for row in dead_letters(pg_engine)}
    assert len(letters) == len(BAD)
    for label, (body, content_type, field, reason) in BAD.items():
        row = letters[body]
        assert (label, row.field) == (label, field)
        assert reason in row.reason, (label, row.reason)
        assert row.content_type == (content_type or "application/json")
        assert row.source == queue.settings.order_queue
    # and the queue is empty: every message was acknowledged
    assert queue.depth() == 0
    assert queue.unacked_on_redis() == 0


def test_dlq_replay_redrives_a_dead_letter_with_its_content_type(
    broker_url: str, pg_engine: Engine, make_order_queue: Any
) -> None:
    queue: OrderQueue = make_order_queue(broker_url, database_url(pg_engine))
    publish_events(broker_url, [b"\x80\x04K\x01."], queue.settings, content_type=PICKLE)
    publish_events(broker_url, [b"{oops"], queue.settings)
    ingest_once(queue)
    listed = slatimer("dlq", "list", "--json", env=queue.env)
    assert listed.returncode == 0, listed.stderr.decode()
    [oops, pickled] = [orjson.loads(line) for line in listed.stdout.splitlines()]  # newest first
    assert (pickled["field"], oops["field"]) == ("(content_type)", "(message)")
    assert oops["body_excerpt"] == "{oops"
    # When the pickled one is replayed, unfixed
    replayed = slatimer("dlq", "replay", "--id", str(pickled["id"]), env=queue.env)
    assert replayed.returncode == 0, replayed.stderr.decode()
    assert queue.depth() == 1
    ingest_once(queue)
    # Then it is dead-lettered again, as a new row, and the old row is marked replayed
    rows = dead_letters(pg_engine)
    assert [(row.id, row.field, row.content_type) for row in rows] == [
        (pickled["id"], "(content_type)", PICKLE),
        (oops["id"], "(message)", "application/json"),
        (oops["id"] + 1, "(content_type)", PICKLE),
    ]
    assert rows[0].replayed_at is not None
    assert rows[1].replayed_at is None and rows[2].replayed_at is None
    assert rows[2].body == rows[0].body
    # and --all re-drives what was never replayed
    assert slatimer("dlq", "replay", "--all", env=queue.env).returncode == 0
    assert queue.depth() == 2
    unknown = slatimer("dlq", "replay", "--id", "999", env=queue.env)
    assert unknown.returncode == 2 and b"no dead letter with id 999" in unknown.stderr


def test_nothing_is_acknowledged_while_the_database_is_down(
    broker_url: str, pg_engine: Engine, make_order_queue: Any
) -> None:
    # Given two events on the queue and a database that refuses connections
    down: OrderQueue = make_order_queue(broker_url, CLOSED_PORT_DB)
    publish_events(broker_url, [created("e1", "o1"), created("e2", "o2")], down.settings)
    # When `ingest --once` runs, it fails and leaves them on the queue (none dead-lettered)
    failed = slatimer("ingest", "--once", env=down.env)
    assert failed.returncode == 1
    assert orjson.loads(failed.stdout.splitlines()[-1])["database_failures"] == 1
    assert (down.depth(), down.unacked_on_redis()) == (2, 0)
    # and the long-running consumer keeps retrying with backoff, acknowledging nothing
    ingestor = Ingestor(bootstrap(down.settings))
    with running(ingestor):
        wait_for(lambda: ingestor.stats.database_failures >= 2, timeout=15)
    assert ingestor.stats.accepted == 0
    assert (down.depth(), down.unacked_on_redis()) == (2, 0)
    # Then, once the database is back, they are delivered again and recorded
    up = _same_queue(down, database_url(pg_engine))
    assert ingest_once(up)["accepted"] == 2
    assert down.depth() == 0


def test_the_consumer_reconnects_after_losing_redis(
    redis_url: str, pg_engine: Engine, make_order_queue: Any
) -> None:
    queue: OrderQueue = make_order_queue(redis_url, database_url(pg_engine))
    ingestor = Ingestor(bootstrap(queue.settings))
    with running(ingestor):
        publish_events(redis_url, [created("e1", "o1")], queue.settings)
        wait_for(lambda: ingestor.stats.accepted == 1)
        # When the server drops the consumer's connections (found by its client name)
        assert _kill_redis_clients(redis_url, f"slatimer-ingest:{queue.settings.order_queue}:") >= 1
        publish_events(redis_url, [created("e2", "o2")], queue.settings)
        # Then it reconnects and carries on
        wait_for(lambda: ingestor.stats.accepted == 2, timeout=20)
    assert ingestor.stats.broker_reconnects >= 1
    assert (queue.depth(), queue.unacked_on_redis()) == (0, 0)


TAKE_AND_HANG = """
import threading, time
from config.settings import Settings
from worker.ingest.redis_source import redis_source
settings = Settings()
with redis_source(settings, settings.broker_url) as source:
    taken = []
    while len(taken) < 2:
        taken += source.take(2 - len(taken), 10, 0.1, threading.Event())
    print("taken", flush=True)
    time.sleep(600)
"""


def test_a_batch_taken_by_a_killed_consumer_is_back_after_the_ingest_visibility_timeout(
    redis_url: str, pg_engine: Engine, make_order_queue: Any
) -> None:
    # Given a consumer that took two events and was killed (SIGKILL) before acknowledging them
    queue: OrderQueue = make_order_queue(redis_url, database_url(pg_engine))
    settings = queue.settings.model_copy(update={"ingest_visibility_timeout": 1})
    publish_events(redis_url, [created("e1", "o1"), created("e2", "o2")], settings)
    env = {**queue.env, "SLATIMER_INGEST_VISIBILITY_TIMEOUT": "1"}
    taker = subprocess.Popen(
        [sys.executable, "-c", TAKE_AND_HANG], env=env, cwd=ROOT, stdout=subprocess.PIPE
    )
    assert taker.stdout is not None and taker.stdout.readline().strip() == b"taken"
    taker.kill()
    taker.wait(timeout=10)
    assert (queue.depth(), queue.unacked_on_redis()) == (0, 2)
    # When another consumer runs
    ingestor = Ingestor(bootstrap(settings))
    with running(ingestor):
        # Then it finds them abandoned, takes them back and records them, within seconds
        wait_for(lambda: ingestor.stats.accepted == 2, timeout=15)
    assert (queue.depth(), queue.unacked_on_redis()) == (0, 0)


def test_an_unreachable_broker_is_retried_with_backoff_until_stopped() -> None:
    settings = Settings(broker_url="redis://127.0.0.1:9/0", database_url="sqlite://")
    assert Ingestor(bootstrap(settings)).run(once=True) == 1
    ingestor = Ingestor(bootstrap(settings))
    with running(ingestor):
        wait_for(lambda: ingestor.stats.broker_reconnects >= 2, timeout=15)


# --- helpers -------------------------------------------------------------------------------


@contextmanager
def running(ingestor: Ingestor) -> Iterator[None]:
    """The consumer in a thread (as `slatimer ingest` runs it), stopped and joined afterwards."""
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(ingestor.run()), daemon=True)
    thread.start()
    try:
        yield
    finally:
        ingestor.stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and status == [0]


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _same_queue(queue: OrderQueue, database: str) -> OrderQueue:
    env = {**queue.env, "SLATIMER_DATABASE_URL": database}
    return OrderQueue(queue.kind, queue.settings.model_copy(update={"database_url": database}), env)


def _kill_redis_clients(url: str, name: str) -> int:
    """Drop the connections of the clients whose name starts with `name`."""
    client = redis.Redis.from_url(url)
    victims = [
        entry["id"] for entry in client.client_list() if entry.get("name", "").startswith(name)
    ]
    for victim in victims:
        client.client_kill_filter(_id=victim)
    return len(victims)


def test_working_time_events_keep_their_calendar_and_pauses_in_postgresql(
    redis_url: str, pg_engine: Engine, make_order_queue: Any
) -> None:
    """Contract v3 through the real consumer: an IPR complaint (its stream key filled in), a
    typhoon closure that re-judges it, and a case event whose order_id contradicts its case id
    (a dead letter naming `order_id`)."""
    queue: OrderQueue = make_order_queue(redis_url, database_url(pg_engine))
    filed_at = "2026-11-16T10:00:00+08:00"  # a Monday in Hong Kong
    events = [
        {"type": "ipr.complaint_filed", "event_id": "w-1", "occurred_at": filed_at,
         "complaint_id": "C1", "merchant_id": "m-1"},
        {"type": "calendar.closure_declared", "event_id": "w-2", "occurred_at": filed_at,
         "closure_id": "t8", "starts_at": "2026-11-17T09:00:00+08:00",
         "ends_at": "2026-11-17T17:00:00+08:00", "reason": "typhoon signal no. 8"},
        {"type": "cs.inquiry_received", "event_id": "w-3", "occurred_at": filed_at,
         "inquiry_id": "Q1", "order_id": "o-1"},
    ]  # fmt: skip
    publish_events(redis_url, [orjson.dumps(e) for e in events], queue.settings)
    counts = ingest_once(queue)
    assert (counts["accepted"], counts["dead_lettered"]) == (2, 1)
    assert [(row.field, row.reason) for row in dead_letters(pg_engine)] == [
        ("order_id", "must be 'cs:Q1' (or left out)")
    ]
    with pg_engine.connect() as connection:
        rows = connection.execute(
            select(
                DeadlineRow.rule, DeadlineRow.due_at, DeadlineRow.calendar, DeadlineRow.paused
            ).where(DeadlineRow.order_id == "ipr:C1", DeadlineRow.rule == "ipr_response_overdue")
        ).all()
    [(rule, due_at, calendar, paused)] = rows
    assert due_at.isoformat() == "2026-11-19T00:00:00+00:00"  # Thursday 08:00 HKT: 8 h paused
    assert calendar.startswith("hk_working_days: working days in Asia/Hong_Kong")
    assert paused == [["2026-11-17T01:00:00+00:00", "2026-11-17T09:00:00+00:00"]]
