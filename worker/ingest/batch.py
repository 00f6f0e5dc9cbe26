"""Ingest, the broker-free half: judge a batch of raw messages inside one transaction.

Each message runs in its own savepoint, so a bad one (refused by the contract, or one that trips
a bug in a handler) becomes a dead letter in the same transaction as the good ones around it;
acknowledging the batch after the commit then never loses a message. Database connectivity
errors are the exception: they propagate, because the batch must be retried, not dead-lettered.
The kombu adapter is worker/ingest/consumer.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from models.events import (
    MAX_EVENT_BYTES,
    AnnouncementPublished,
    ContractError,
    Event,
    parse_event,
)
from models.outcomes import Outcome, iso
from models.policy import Policy
from store.base import DeadLetter, Unisolated, UnitOfWork
from worker.service.handlers import record_event

log = structlog.get_logger("slatimer.ingest")

JSON_TYPE = "application/json"
TEXT_ENCODINGS = ("", "utf-8", "utf8", "binary")
"""content_encoding values that leave the bytes as they are ('binary' is kombu's default)."""
KEPT_BODY_BYTES = 16 * MAX_EVENT_BYTES
"""A dead letter keeps the body whole up to this size, so a runaway producer cannot bloat it."""
FIELD_CHARS, REASON_CHARS, TYPE_CHARS, SOURCE_CHARS = 256, 1024, 128, 128  # the column sizes


@dataclass(frozen=True)
class RawMessage:
    """A message as the broker delivered it: raw bytes and the producer's declarations."""

    body: bytes
    content_type: str | None = None
    content_encoding: str | None = None
    compression: str | None = None


@dataclass
class BatchResult:
    accepted: int = 0
    """Events stored, or harmless repeats of stored ones."""
    outcomes: list[Outcome] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


@dataclass
class IngestStats:
    """Counters the consumer keeps for the life of the process (the metrics export reads them)."""

    received: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    dead_lettered_by_field: Counter[str] = field(default_factory=Counter)
    outcomes: int = 0
    batches: int = 0
    database_failures: int = 0
    broker_reconnects: int = 0

    def add(self, result: BatchResult) -> None:
        self.batches += 1
        self.received += result.accepted + len(result.dead_letters)
        self.accepted += result.accepted
        self.dead_lettered += len(result.dead_letters)
        self.dead_lettered_by_field.update(letter.field for letter in result.dead_letters)
        self.outcomes += len(result.outcomes)

    def as_dict(self) -> dict[str, object]:
        counts = dict(vars(self))
        counts["dead_lettered_by_field"] = dict(sorted(self.dead_lettered_by_field.items()))
        return counts


def ingest_batch(
    messages: Sequence[RawMessage],
    uow: UnitOfWork,
    now: datetime,
    policy: Policy,
    source: str,
    max_skew: timedelta,
    set_based: bool = True,
) -> BatchResult:
    """Handle a batch inside the caller's transaction (the caller commits, then acknowledges).
    Raises only what the whole batch must be retried for (see `is_connectivity_error`).

    With `set_based` (SLATIMER_INGEST_SET_BASED, off by default: see docs/bench.md), the batch
    is first handled set-based (`uow.batch`: a few queries for all its orders); if a
    handler fails after writing, or a write fails, that attempt is rolled back and the batch is
    handled again message by message, each in its own savepoint."""
    checked = [_checked(message, now, max_skew) for message in messages]
    events = [event for event in checked if not isinstance(event, ContractError)]
    orders = [event.order_id for event in events if not isinstance(event, AnnouncementPublished)]
    if not set_based:
        return _ingest_all(messages, checked, uow, now, policy, source)
    try:
        with uow.batch(orders, [event.event_id for event in events]) as batched:
            return _ingest_all(messages, checked, batched, now, policy, source)
    except Exception as error:
        if is_connectivity_error(error):
            raise
        log.warning("batch redone message by message", error=repr(error)[:500])
    return _ingest_all(messages, checked, uow, now, policy, source)


def _checked(message: RawMessage, now: datetime, max_skew: timedelta) -> Event | ContractError:
    try:
        return accept(message, now, max_skew)
    except ContractError as refused:
        return refused


def _ingest_all(
    messages: Sequence[RawMessage],
    checked: Sequence[Event | ContractError],
    uow: UnitOfWork,
    now: datetime,
    policy: Policy,
    source: str,
) -> BatchResult:
    result = BatchResult()
    for message, event in zip(messages, checked, strict=True):
        refusal = event if isinstance(event, ContractError) else _record(event, uow, now, policy)
        if isinstance(refusal, ContractError):
            letter = dead_letter(message, refusal, now, source)
            uow.dead_letters.add(letter)
            result.dead_letters.append(letter)
        else:
            result.accepted += 1
            result.outcomes += refusal
    return result


def _record(
    event: Event, uow: UnitOfWork, now: datetime, policy: Policy
) -> list[Outcome] | ContractError:
    """Record one event in its own savepoint: its outcomes, or why it was refused."""
    try:
        with uow.savepoint():
            return record_event(event, uow, now, policy)
    except ContractError as refused:  # includes DuplicateEventId, raised inside the savepoint
        return refused
    except Unisolated:
        raise
    except Exception as bug:
        if is_connectivity_error(bug):
            raise
        log.exception("handler failed; message dead-lettered", error=repr(bug))
        return ContractError("(internal)", f"{type(bug).__name__}: {bug}")


def accept(message: RawMessage, now: datetime, max_skew: timedelta) -> Event:
    """The event in a message, or ContractError: its envelope, its body, its time."""
    check_envelope(message)
    event = parse_event(message.body)
    if event.occurred_at > now + max_skew:
        raise ContractError(
            "occurred_at",
            f"{iso(event.occurred_at)} is more than {max_skew.total_seconds():g} s ahead of "
            f"the clock ({iso(now)})",
        )
    return event


def check_envelope(message: RawMessage) -> None:
    """Only JSON, declared as such or not declared at all (raw AMQP producers often omit the
    content type). Anything else, pickle above all, is refused unread: the declaration says the
    producer meant something other than a JSON event."""
    if message.compression:
        raise ContractError("(compression)", f"{message.compression!r}: compressed messages")
    media, *parameters = (message.content_type or "").lower().split(";")
    if media.strip() not in ("", JSON_TYPE):
        raise ContractError(
            "(content_type)", f"{message.content_type!r} is not accepted; publish {JSON_TYPE}"
        )
    charsets = [value.strip(' "') for key, _, value in _pairs(parameters) if key == "charset"]
    encodings = [*charsets, (message.content_encoding or "").lower()]
    if any(encoding not in TEXT_ENCODINGS for encoding in encodings):
        raise ContractError("(content_encoding)", "JSON events must be UTF-8")


def _pairs(parameters: list[str]) -> list[tuple[str, str, str]]:
    return [parameter.strip().partition("=") for parameter in parameters]


def is_connectivity_error(error: BaseException) -> bool:
    """Whether the database (not the message) failed: a lost or refused connection. A failed
    rollback can mask the original error, so the whole chain of causes is looked at."""
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, OperationalError | InterfaceError):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def dead_letter(
    message: RawMessage, refusal: ContractError, now: datetime, source: str
) -> DeadLetter:
    """The dead-letter row: texts cleaned to fit their columns, the body kept byte for byte."""
    body, reason = message.body, refusal.reason
    if len(body) > KEPT_BODY_BYTES:
        reason = f"{reason} (body cut to its first {KEPT_BODY_BYTES} of {len(body)} bytes)"
        body = body[:KEPT_BODY_BYTES]
    return DeadLetter(
        received_at=now,
        source=_clean(source, SOURCE_CHARS),
        field=_clean(refusal.field, FIELD_CHARS),
        reason=_clean(reason, REASON_CHARS),
        content_type=_clean(message.content_type, TYPE_CHARS) if message.content_type else None,
        body=body,
    )


def _clean(text: str, limit: int) -> str:
    """Producer-controlled text (a field name, a content type) must not break the insert:
    PostgreSQL refuses NUL and lone surrogates cannot be encoded."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"


Publish = Callable[[Sequence[DeadLetter]], None]


def replay_dead_letters(
    uow: UnitOfWork, ids: Sequence[int] | None, publish: Publish, now: datetime, limit: int
) -> list[DeadLetter]:
    """Re-drive dead letters (`ids=None`: every one not yet replayed) and mark them replayed,
    inside the caller's transaction: publish first, so a failed publish marks nothing; a failed
    commit after it means they may be re-driven twice, which the inbox makes harmless."""
    letters = uow.dead_letters.for_replay(ids, limit)
    if ids is not None:
        missing = sorted(set(ids) - {letter.id for letter in letters})
        if missing:
            raise LookupError(f"no dead letter with id {', '.join(map(str, missing))}")
    if letters:
        publish(letters)
        uow.dead_letters.mark_replayed([letter.id for letter in letters if letter.id], now)
    return letters


def excerpt(body: bytes, width: int) -> str:
    """A printable start of a body, whatever bytes it holds."""
    text = body[: width * 4].decode("utf-8", "backslashreplace").replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 1] + "…"


def dead_letter_text(letter: DeadLetter) -> str:
    """Two lines for `slatimer dlq list`: what was wrong, then the start of the body."""
    replayed = f"  (replayed {iso(letter.replayed_at)})" if letter.replayed_at else ""
    return (
        f"{letter.id:>6}  {iso(letter.received_at)}  {letter.field}: {letter.reason}{replayed}\n"
        f"        {excerpt(letter.body, 92)}"
    )


def dead_letter_json(letter: DeadLetter) -> str:
    return orjson.dumps(
        {
            "id": letter.id,
            "received_at": iso(letter.received_at),
            "source": letter.source,
            "field": letter.field,
            "reason": letter.reason,
            "content_type": letter.content_type,
            "size": len(letter.body),
            "body_excerpt": excerpt(letter.body, 200),
            "replayed_at": iso(letter.replayed_at) if letter.replayed_at else None,
        }
    ).decode()
