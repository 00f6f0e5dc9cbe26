"""Bad input against a real `slatimer ingest` process: a corpus of malformed messages and a
hypothesis fuzzer, interleaved with good events. Every bad message lands in `dead_letters` with
a field and a reason, every good one is recorded, and the process never exits (same PID)."""

from __future__ import annotations

import os
import pickle
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from config.settings import Settings
from store.sql.engine import make_engine
from store.sql.tables import DeadLetterRow
from tests.builders import doc
from tests.faults.figures import FIGURES
from tests.faults.harness import inbox_ids
from tests.faults.servers import PrivatePostgres, PrivateRedis, started
from tests.runtime import Processes, runtime_env, wait_for
from worker.ingest.consumer import connect, publish_events

pytestmark = pytest.mark.faults
JSON = "application/json"
EXAMPLES = int(os.environ.get("SLATIMER_FAULTS_FUZZ_EXAMPLES", "60"))


@dataclass
class Ingest:
    engine: Engine
    settings: Settings
    children: Processes
    pid: int
    sent_bad: Counter[bytes]
    good: set[str]

    def publish(self, body: bytes, content_type: str = JSON) -> None:
        with connect(self.settings) as connection:
            publish_events(connection, [body], self.settings, content_type)

    def bad(self, body: bytes, content_type: str = JSON) -> None:
        self.publish(body, content_type)
        self.sent_bad[body] += 1
        FIGURES.add("bad_messages_tried")

    def good_one(self) -> None:
        document = good_doc(order_id=f"good-{len(self.good)}")
        self.publish(dumps(document))
        self.good.add(document["event_id"])

    def settled(self) -> bool:
        return (
            dead_letter_bodies(self.engine) >= self.sent_bad and inbox_ids(self.engine) >= self.good
        )

    def wait(self) -> None:
        try:
            wait_for(self.settled, 30, "every bad message dead-lettered, every good one in", 0.05)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.children.logs()}") from None

    def alive(self) -> bool:
        process = self.children.running["ingest"]
        return process.poll() is None and process.pid == self.pid


def dead_letter_bodies(engine: Engine) -> Counter[bytes]:
    with engine.connect() as connection:
        return Counter(bytes(body) for body in connection.scalars(select(DeadLetterRow.body)))


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    """One ingest process on a private PostgreSQL and Redis for the whole module."""
    pg = started(PrivatePostgres(), "init")
    broker = started(PrivateRedis(), "start")
    engine = make_engine(pg.url)
    env = runtime_env(pg.url, broker.url, SLATIMER_LOG_LEVEL="WARNING")
    children = Processes(env, tmp_path_factory.mktemp("ingest"))
    process = children.start("ingest")
    settings = Settings(broker_url=broker.url, database_url=pg.url)
    try:
        yield Ingest(engine, settings, children, process.pid, Counter(), set())
    finally:
        alive = children.running["ingest"].poll() is None
        FIGURES.add("exits_on_bad_input", 0 if alive else 1)
        FIGURES.add("bad_messages_dead_lettered", sum(dead_letter_bodies(engine).values()))
        children.stop_all()
        engine.dispose()
        broker.destroy()
        pg.destroy()


def good_doc(**changes: Any) -> dict[str, Any]:
    document = doc("order.created", "o-bad", datetime.now(UTC) - timedelta(minutes=1))
    document.update(
        merchant_id="m-1",
        items=[{"sku": "sku-1", "quantity": 1}],
        ship_to={"country": "CN", "postcode": "200000"},
    )
    document.update(changes)
    return document


def dumps(document: Any) -> bytes:
    return orjson.dumps(document)


AHEAD = (datetime.now(UTC) + timedelta(days=1)).isoformat()
CORPUS: list[tuple[str, bytes, str, str | None]] = [
    # (name, body, content type, the field the dead letter must name; None: any)
    ("invalid JSON", b'{"event_id": "e1", "type": ', JSON, "(message)"),
    ("invalid UTF-8", b'{"event_id": "\xff\xfe", "type": "order.created"}', JSON, "(message)"),
    ("UTF-16 body", dumps(good_doc()).decode().encode("utf-16"), JSON, "(message)"),
    ("latin-1 charset", dumps(good_doc()), "application/json; charset=iso-8859-1", None),
    ("NaN", b'{"event_id": "e2", "type": "order.created", "x": NaN}', JSON, "(message)"),
    ("a JSON array", b"[1, 2, 3]", JSON, "(message)"),
    ("null", b"null", JSON, "(message)"),
    ("empty body", b"", JSON, "(message)"),
    ("unknown type", dumps(good_doc(type="order.lost")), JSON, "type"),
    ("no type", dumps({k: v for k, v in good_doc().items() if k != "type"}), JSON, "type"),
    ("no order_id", dumps({k: v for k, v in good_doc().items() if k != "order_id"}), JSON, None),
    ("quantity a string", dumps(good_doc(items=[{"sku": "s", "quantity": "one"}])), JSON, None),
    ("order_id a number", dumps(good_doc(order_id=12)), JSON, "order_id"),
    ("naive timestamp", dumps(good_doc(occurred_at="2026-03-02T09:00:00")), JSON, "occurred_at"),
    ("year 2150", dumps(good_doc(occurred_at="2150-01-01T00:00:00Z")), JSON, "occurred_at"),
    ("pre-epoch", dumps(good_doc(occurred_at="1969-12-31T23:59:59Z")), JSON, "occurred_at"),
    ("epoch 0", dumps(good_doc(occurred_at="1970-01-01T00:00:00Z")), JSON, "occurred_at"),
    (
        "a day ahead",
        dumps(good_doc(occurred_at=(datetime.now(UTC) + timedelta(days=1)).isoformat())),
        JSON,
        "occurred_at",
    ),  # fmt: skip
    ("huge string", dumps(good_doc(merchant_id="m" * 60_000)), JSON, None),
    ("huge array", dumps(good_doc(items=[{"sku": "s", "quantity": 1}] * 5000)), JSON, None),
    ("oversize body", dumps(good_doc(note="x" * 100_000)), JSON, "(message)"),
    (
        "pickle",
        pickle.dumps({"event_id": "e3", "type": "order.created"}),
        "application/x-python-serialize",
        "(content_type)",
    ),  # fmt: skip
    ("text/plain", dumps(good_doc()), "text/plain", "(content_type)"),
    ("kombu's application/data", dumps(good_doc()), "application/data", "(content_type)"),
    ("extra field", dumps(good_doc(unexpected=1)), JSON, None),
]


def test_a_corpus_of_bad_messages_is_dead_lettered_and_ingest_stays_up(ingest: Ingest) -> None:
    # Given the corpus, each bad message between two good events
    ingest.good_one()
    for _name, body, content_type, _field in CORPUS:
        ingest.bad(body, content_type)
        ingest.good_one()
    # and an event_id reused for a different body, after its first use was recorded
    first = good_doc(event_id="dup-1")
    ingest.publish(dumps(first))
    ingest.good.add("dup-1")
    ingest.wait()
    ingest.bad(dumps({**first, "order_id": "another-order"}))
    # Then each is dead-lettered with the field named, the good ones are in, ingest is alive
    ingest.wait()
    with ingest.engine.connect() as connection:
        letters = {bytes(row.body): row for row in connection.execute(select(DeadLetterRow))}
    reused = ("reused event_id", dumps({**first, "order_id": "another-order"}), JSON, "event_id")
    for name, body, _content_type, field in [*CORPUS, reused]:
        letter = letters[body]
        assert letter.reason, name
        assert field is None or letter.field == field, (name, letter.field, letter.reason)
    assert ingest.alive()


def wrong_value() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.integers(),
        st.floats(allow_nan=False),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )


def out_of_range_time() -> st.SearchStrategy[str]:
    naive = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 1, 1))
    outside = st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(1999, 12, 31)
    ) | st.datetimes(min_value=datetime(2100, 1, 2), max_value=datetime(9998, 12, 31))
    return st.one_of(
        naive.map(lambda moment: moment.isoformat()),
        outside.map(lambda moment: moment.replace(tzinfo=UTC).isoformat()),
        st.text(max_size=30),
    )


def bad_messages() -> st.SearchStrategy[bytes]:
    """Bodies that can never be a valid event."""
    string_fields = st.sampled_from(["event_id", "order_id", "merchant_id", "occurred_at", "type"])
    required = st.sampled_from(["event_id", "order_id", "occurred_at", "merchant_id", "items"])
    return st.one_of(
        st.binary(max_size=200).filter(lambda body: not body.lstrip().startswith(b"{")),
        st.builds(lambda f, v: dumps(good_doc(**{f: v})), string_fields, wrong_value()),
        required.map(lambda f: dumps({k: v for k, v in good_doc().items() if k != f})),
        out_of_range_time().map(lambda t: dumps(good_doc(occurred_at=t))),
        st.text(min_size=1, max_size=40)
        .filter(lambda t: "." not in t)
        .map(lambda t: dumps(good_doc(type=t))),
        st.integers(min_value=1, max_value=4).map(
            lambda n: dumps(good_doc(note="é" * (40_000 * n)))
        ),
    )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=bad_messages(), content_type=st.sampled_from([JSON, JSON, JSON, "text/plain"]))
def test_fuzzed_bad_messages_are_dead_lettered_among_good_ones(
    ingest: Ingest, body: bytes, content_type: str
) -> None:
    # Given a fuzzed bad message between two good events
    ingest.good_one()
    ingest.bad(body, content_type)
    ingest.good_one()
    # Then it is dead-lettered, the good ones are in, and ingest is the same process
    ingest.wait()
    assert ingest.alive()


def test_ingest_never_exited(ingest: Ingest, tmp_path: Path) -> None:
    time.sleep(0.5)
    assert ingest.alive()
