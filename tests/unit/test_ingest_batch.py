"""Ingest's batch logic on the in-memory store (and SQLite): what is recorded, what is
dead-lettered with which field and reason, and what makes the whole batch retry instead."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from config.policy import load_policy
from config.settings import DEFAULT_POLICY
from models.events import MAX_EVENT_BYTES
from models.policy import Policy
from store.base import DeadLetter, UnitOfWork
from store.memory import MemoryUnitOfWork
from store.sql.tables import DeadLetterRow, InboxRow, OrderRow
from tests.builders import T0, H, doc
from tests.conftest import sql_uow
from worker.ingest import batch as ingest_service
from worker.ingest.batch import (
    IngestStats,
    RawMessage,
    dead_letter,
    ingest_batch,
    is_connectivity_error,
    replay_dead_letters,
)
from worker.ingest.consumer import raw_message
from worker.process.backoff import compute_backoff

NOW = T0 + 2 * H
SKEW = timedelta(hours=1)
SOURCE = "slatimer.orders"
POLICY = load_policy(DEFAULT_POLICY)


def created(event_id: str, order_id: str = "o1", **changes: Any) -> dict[str, Any]:
    document = doc(
        "order.created",
        order_id,
        T0,
        event_id=event_id,
        merchant_id="m-1",
        items=[{"sku": "sku-1", "quantity": 1}],
        ship_to={"country": "CN", "postcode": "200000"},
    )
    return {**document, **changes}


def message(document: Any, content_type: str | None = "application/json", **kw: Any) -> RawMessage:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    return RawMessage(body=body, content_type=content_type, **kw)


def run_batch(messages: list[RawMessage], uow: UnitOfWork | None = None) -> Any:
    uow = uow or MemoryUnitOfWork()
    with uow:
        result = ingest_batch(messages, uow, NOW, POLICY, SOURCE, SKEW)
        uow.commit()
    return uow, result


def inbox_ids(uow: MemoryUnitOfWork) -> list[str]:
    return sorted(uow.inbox.digests)


def letters(uow: MemoryUnitOfWork) -> list[tuple[str, str]]:
    return [(letter.field, letter.reason) for letter in reversed(uow.dead_letters.latest(100))]


OVERSIZE = orjson.dumps(created("big", merchant_id="m" * MAX_EVENT_BYTES))
MALFORMED = [
    ("invalid JSON", message(b'{"event_id": "x",'), "(message)", "not valid JSON"),
    ("not an object", message(b"[1, 2]"), "(message)", "must be a JSON object"),
    (
        "wrong type",
        message(created("bad", items=[{"sku": "a", "quantity": "2"}])),
        "items.0.quantity",
        "Input should be a valid integer",
    ),
    ("unknown type", message(created("bad", type="order.lost")), "type", "unknown event type"),
    (
        "naive timestamp",
        message(created("bad", occurred_at="2026-03-02T09:00:00")),
        "occurred_at",
        "timezone",
    ),
    ("oversize", message(OVERSIZE), "(message)", f"larger than {MAX_EVENT_BYTES} bytes"),
    (
        "pickle",
        message(b"\x80\x04\x95", "application/x-python-serialize"),
        "(content_type)",
        "'application/x-python-serialize' is not accepted",
    ),
    ("text/plain", message(created("bad"), "text/plain"), "(content_type)", "not accepted"),
    (
        "latin-1",
        message(created("bad"), "application/json; charset=latin-1"),
        "(content_encoding)",
        "UTF-8",
    ),
    ("compressed", message(created("bad"), compression="zlib"), "(compression)", "compressed"),
    ("invalid UTF-8", message(b'{"event_id": "\xff"}'), "(message)", "not valid JSON"),
]


@pytest.mark.parametrize(
    ("bad", "field", "reason"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_a_malformed_message_is_dead_lettered_and_its_neighbours_recorded(
    bad: RawMessage, field: str, reason: str
) -> None:
    # Given a bad message between two good ones
    batch = [message(created("e1", "o1")), bad, message(created("e2", "o2"))]
    # When the batch is ingested
    uow, result = run_batch(batch)
    # Then the good ones are in the inbox and the bad one is a dead letter naming the field
    assert inbox_ids(uow) == ["e1", "e2"]
    assert result.accepted == 2
    [(got_field, got_reason)] = letters(uow)
    assert got_field == field
    assert reason in got_reason
    [letter] = uow.dead_letters.latest(1)
    assert letter.body == bad.body[: ingest_service.KEPT_BODY_BYTES]
    assert letter.content_type == bad.content_type
    assert (letter.source, letter.received_at, letter.replayed_at) == (SOURCE, NOW, None)


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json; charset=utf-8", 'Application/JSON; v=1; charset="UTF-8"'],
)
def test_json_undeclared_or_with_utf8_charset_is_accepted(content_type: str | None) -> None:
    uow, result = run_batch([message(created("e1"), content_type, content_encoding="utf-8")])
    assert inbox_ids(uow) == ["e1"]
    assert result.dead_letters == []


def test_a_duplicate_with_the_same_body_is_harmless() -> None:
    same = message(created("e1"))
    uow, first = run_batch([same, same])
    _, again = run_batch([same], uow)
    assert inbox_ids(uow) == ["e1"]
    assert (first.accepted, again.accepted) == (2, 1)
    assert letters(uow) == []


def test_an_event_id_reused_for_another_body_is_dead_lettered_naming_it() -> None:
    uow, _ = run_batch([message(created("e1", "o1"))])
    _, result = run_batch([message(created("e1", "o2")), message(created("e2", "o3"))], uow)
    assert inbox_ids(uow) == ["e1", "e2"]
    assert sorted(uow.orders.states) == ["o1", "o3"]  # the savepoint undid o2's row
    assert letters(uow) == [("event_id", "'e1' was already used for a different event")]
    assert result.accepted == 1


def test_an_event_from_beyond_the_clock_skew_is_dead_lettered() -> None:
    within = created("e1", occurred_at=(NOW + SKEW).isoformat())
    beyond = created("e2", "o2", occurred_at=(NOW + SKEW + timedelta(seconds=1)).isoformat())
    uow, _ = run_batch([message(within), message(beyond)])
    assert inbox_ids(uow) == ["e1"]
    [(field, reason)] = letters(uow)
    assert field == "occurred_at"
    assert "is more than 3600 s ahead of the clock (2026-03-02T11:00:00Z)" in reason


def test_a_handler_bug_dead_letters_only_its_message_and_undoes_its_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = ingest_service.record_event

    def buggy(event: Any, uow: UnitOfWork, now: Any, policy: Policy) -> Any:
        outcomes = real(event, uow, now, policy)  # writes first, then fails
        if event.order_id == "o2":
            raise KeyError("boom")
        return outcomes

    monkeypatch.setattr(ingest_service, "record_event", buggy)
    batch = [message(created(f"e{n}", f"o{n}")) for n in (1, 2, 3)]
    uow, result = run_batch(batch)
    assert inbox_ids(uow) == ["e1", "e3"]
    assert sorted(uow.orders.states) == ["o1", "o3"]
    assert letters(uow) == [("(internal)", "KeyError: 'boom'")]
    assert result.accepted == 2


def test_on_sql_a_handler_bug_after_writes_redoes_the_batch_message_by_message(
    monkeypatch: pytest.MonkeyPatch, sqlite_engine: Engine
) -> None:
    # Given a handler that writes, then fails, for o2 (a batched write cannot be undone alone)
    real = ingest_service.record_event

    def buggy(event: Any, uow: UnitOfWork, now: Any, policy: Policy) -> Any:
        outcomes = real(event, uow, now, policy)
        if event.order_id == "o2":
            raise KeyError("boom")
        return outcomes

    monkeypatch.setattr(ingest_service, "record_event", buggy)
    # When the SQL store takes the batch
    batch = [message(created(f"e{n}", f"o{n}")) for n in (1, 2, 3)]
    _, result = run_batch(batch, sql_uow(sqlite_engine))
    # Then, as message by message: o2's writes are undone, it alone is dead-lettered
    with sqlite_engine.connect() as connection:
        assert sorted(connection.scalars(select(InboxRow.event_id))) == ["e1", "e3"]
        assert sorted(connection.scalars(select(OrderRow.order_id))) == ["o1", "o3"]
        assert list(connection.scalars(select(DeadLetterRow.field))) == ["(internal)"]
    assert result.accepted == 2


@pytest.mark.parametrize(
    "failure",
    [
        OperationalError("SELECT 1", {}, Exception("connection refused")),
        InterfaceError("SELECT 1", {}, Exception("connection already closed")),
        DBAPIError("SELECT 1", {}, Exception("server closed"), connection_invalidated=True),
    ],
    ids=["operational", "interface", "invalidated"],
)
def test_a_lost_database_fails_the_batch_instead_of_dead_lettering(
    failure: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*_args: Any) -> Any:
        raise failure

    monkeypatch.setattr(ingest_service, "record_event", unreachable)
    uow = MemoryUnitOfWork()
    with uow, pytest.raises(type(failure)):
        ingest_batch([message(created("e1"))], uow, NOW, POLICY, SOURCE, SKEW)
    assert letters(uow) == []


def test_connectivity_is_recognised_behind_a_failed_rollback() -> None:
    try:
        try:
            raise OperationalError("SELECT 1", {}, Exception("terminating connection"))
        except OperationalError:
            raise RuntimeError("cannot roll back to savepoint") from None  # chained as context
    except RuntimeError as masked:
        assert is_connectivity_error(masked)
    assert not is_connectivity_error(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_connectivity_error(DBAPIError("SELECT", {}, Exception("syntax")))
    assert not is_connectivity_error(ValueError("x"))


def test_dead_letters_roll_back_with_their_batch() -> None:
    uow = MemoryUnitOfWork()
    with uow:
        ingest_batch([message(b"{oops")], uow, NOW, POLICY, SOURCE, SKEW)
        # no commit: the transaction is abandoned, as when the commit fails
    assert letters(uow) == []


def test_a_dead_letter_keeps_the_body_and_cleans_what_the_producer_controls() -> None:
    body = b'{"\x00\xff": 1}'
    refusal = ingest_service.ContractError("a\x00" + "b" * 300, "why")
    letter = dead_letter(message(body, "application/json\udcff"), refusal, NOW, SOURCE)
    assert letter.body == body
    assert letter.field.startswith("a\\x00b") and len(letter.field) == 256
    assert letter.content_type == "application/json\\udcff"


def test_an_oversize_body_is_kept_up_to_a_cap() -> None:
    huge = b"x" * (ingest_service.KEPT_BODY_BYTES + 10)
    letter = dead_letter(message(huge), ingest_service.ContractError("f", "r"), NOW, SOURCE)
    assert len(letter.body) == ingest_service.KEPT_BODY_BYTES
    assert letter.reason.endswith(f"of {len(huge)} bytes)")


def test_the_sql_store_takes_the_same_batch(sqlite_engine: Engine) -> None:
    batch = [
        message(created("e1", "o1")),
        message(created("e1", "o9")),  # reused id: dead-lettered inside its savepoint
        message(b"\x80\x04", "application/x-python-serialize"),
        message(created("e2", "o2")),
    ]
    _, result = run_batch(batch, sql_uow(sqlite_engine))
    assert result.accepted == 2
    with sqlite_engine.connect() as connection:
        assert sorted(connection.scalars(select(InboxRow.event_id))) == ["e1", "e2"]
        rows = connection.execute(
            select(DeadLetterRow.field, DeadLetterRow.body).order_by(DeadLetterRow.id)
        ).all()
    assert rows == [("event_id", batch[1].body), ("(content_type)", b"\x80\x04")]


def test_replay_publishes_then_marks_and_skips_the_replayed(sqlite_engine: Engine) -> None:
    uow = sql_uow(sqlite_engine)
    run_batch([message(b"{1"), message(b"{2", None)], uow)
    published: list[DeadLetter] = []
    with uow:
        replay_dead_letters(uow, None, published.extend, NOW + H, limit=100)
        uow.commit()
    assert [(letter.id, letter.body) for letter in published] == [(1, b"{1"), (2, b"{2")]
    with uow:
        assert replay_dead_letters(uow, None, published.extend, NOW, limit=100) == []
        again = replay_dead_letters(uow, [2], published.extend, NOW + 2 * H, limit=100)
        uow.commit()
        assert [letter.id for letter in again] == [2]
    with uow:
        by_id = {letter.id: letter.replayed_at for letter in uow.dead_letters.latest(10)}
    assert by_id == {1: NOW + H, 2: NOW + 2 * H}
    with sqlite_engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(DeadLetterRow)) == 2


def test_replay_of_an_unknown_id_publishes_nothing() -> None:
    uow, _ = run_batch([message(b"{1")])
    published: list[DeadLetter] = []
    with uow, pytest.raises(LookupError, match="no dead letter with id 7"):
        replay_dead_letters(uow, [1, 7], published.extend, NOW, limit=100)
    assert published == []


def test_stats_count_batches_by_field() -> None:
    _, result = run_batch([message(created("e1")), message(b"{"), message(b"[]")])
    stats = IngestStats()
    stats.add(result)
    stats.add(result)
    counts = stats.as_dict()
    assert counts["received"] == 6 and counts["accepted"] == 2 and counts["batches"] == 2
    assert counts["dead_lettered_by_field"] == {"(message)": 4}


class _AmqpMessage:
    """What py-amqp hands over when a body declares content_encoding: it is decoded to str."""

    def __init__(self, body: Any, content_encoding: str | None) -> None:
        self.body, self.content_encoding = body, content_encoding
        self.content_type = "application/json"
        self.headers: dict[str, Any] = {}


@pytest.mark.parametrize(
    ("body", "encoding", "raw"),
    [
        ('{"é": 1}', "utf-8", '{"é": 1}'.encode()),
        ("café", "latin-1", "café".encode("latin-1")),
        (b"\xff\xfe", "utf-8", b"\xff\xfe"),  # py-amqp could not decode it: bytes as they came
        ("x", "no-such-codec", b"x"),
    ],
)
def test_the_raw_bytes_are_recovered_from_a_decoded_body(
    body: Any, encoding: str, raw: bytes
) -> None:
    assert raw_message(_AmqpMessage(body, encoding)).body == raw


def test_backoff_grows_exponentially_up_to_a_cap_with_jitter() -> None:
    jitter = random.Random(7)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)]:
        waits = [compute_backoff(attempt, 0.5, 30.0, jitter) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 4  # jittered, so reconnects do not stampede
    assert compute_backoff(3, jitter=random.Random(1)) == compute_backoff(
        3, jitter=random.Random(1)
    )
