"""How the domain's values become rows and rows become values again, shared by the plain unit
of work (store.sql.repositories) and the batched one (store.sql.batch): one mapping, two ways
of sending it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from models.alerts import alert_body
from models.events import Event
from models.outcomes import LedgerEntry, Outcome, Recorded
from models.rules import Clocked
from store.base import DeadLetter, calendar_of, deadline_state
from store.sql.tables import (
    DeadLetterRow,
    DeadlineRow,
    OutcomeRow,
)

OPEN_STATES = ("pending", "enqueued")
DUE_ORDER = (DeadlineRow.due_at, DeadlineRow.order_id, DeadlineRow.rule, DeadlineRow.subject)
"""`DueDeadline.rank`: the order replay fires clocks in, the same as the memory store's heap."""

Slot = tuple[str, str]


def deadline_changes(
    existing: dict[Slot, tuple[datetime, str]], current: Sequence[Clocked], now: datetime
) -> list[tuple[Slot, datetime, str, Clocked | None]]:
    """The (slot, due_at, state, clock) rows to write so an order's timer rows match its clocks:
    open clocks pending at their time, vanished ones met (with no clock); a row already handed
    to a timer (enqueued) at the same time is the dispatcher's and is left alone."""
    changes: list[tuple[Slot, datetime, str, Clocked | None]] = []
    for clock in current:
        state, row = deadline_state(clock, now), existing.get(clock.slot)
        if row == (clock.due_at, state):
            continue
        if row == (clock.due_at, "enqueued") and state == "pending":
            continue  # already handed to a timer; the dispatcher owns it
        changes.append((clock.slot, clock.due_at, state, clock))
    wanted = {clock.slot for clock in current}
    for slot, (due_at, was) in existing.items():
        if slot not in wanted and was in OPEN_STATES:
            changes.append((slot, due_at, "met", None))  # its obligation no longer applies
    return changes


def calendar_values(clock: Clocked) -> dict[str, Any]:
    """A working-time clock's calendar and paused stretches, as the deadline row keeps them."""
    calendar, paused = calendar_of(clock)
    stored = [[start.isoformat(), end.isoformat()] for start, end in paused] or None
    return {"calendar": calendar, "paused": stored}


def inbox_values(event: Event, digest: str, received_at: datetime) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "order_id": event.order_id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "received_at": received_at,
        "digest": digest,
        "body": msgspec.to_builtins(event),
    }


def outcome_values(outcome: Outcome) -> dict[str, Any]:
    return {
        "kind": outcome.kind,
        "order_id": outcome.order_id,
        "merchant_id": outcome.merchant_id,
        "rule": outcome.rule,
        "subject": outcome.subject,
        "category": outcome.category,
        "clause": outcome.clause,
        "at": outcome.at,
        "severity": outcome.severity,
        "points": outcome.points,
        "retracted": False,
    }


def ledger_values(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "merchant_id": entry.merchant_id,
        "order_id": entry.order_id,
        "rule": entry.rule,
        "subject": entry.subject,
        "outcome_at": entry.outcome_at,
        "entry": entry.entry,
        "points": entry.points,
        "at": entry.at,
    }


def alert_values(outcome: Outcome, created_at: datetime) -> dict[str, Any]:
    body = alert_body(outcome)
    return {
        "alert_id": body["data"]["alert_id"],  # derived once: a SHA-256 of the outcome
        "merchant_id": outcome.merchant_id,
        "order_id": outcome.order_id,
        "kind": outcome.kind,
        "rule": outcome.rule,
        "body": body,
        "created_at": created_at,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": created_at,
    }


def dead_letter_values(letter: DeadLetter) -> dict[str, Any]:
    return {
        "received_at": letter.received_at,
        "source": letter.source,
        "field": letter.field,
        "reason": letter.reason,
        "content_type": letter.content_type,
        "body": letter.body,
        "replayed_at": letter.replayed_at,
    }


def recorded_from_row(row: OutcomeRow) -> Recorded:
    return Recorded(
        kind=row.kind,  # type: ignore[arg-type]
        rule=row.rule,
        subject=row.subject,
        category=row.category,
        clause=row.clause,
        at=row.at,
        severity=row.severity,  # type: ignore[arg-type]
        points=row.points,
        retracted=row.retracted,
    )


def dead_letter_from_row(row: DeadLetterRow) -> DeadLetter:
    return DeadLetter(
        id=row.id,
        received_at=row.received_at,
        source=row.source,
        field=row.field,
        reason=row.reason,
        content_type=row.content_type,
        body=bytes(row.body),
        replayed_at=row.replayed_at,
    )
