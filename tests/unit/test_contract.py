"""Event contract v3: strict parsing, errors that name the field and the reason."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from models.events import MAX_EVENT_BYTES, ContractError, contract_schema, parse_event
from models.policy import Policy
from store.memory import MemoryUnitOfWork
from tests.builders import T0, doc
from worker.service.handlers import DuplicateEventId, record_event

AT = "2026-03-02T09:00:00Z"
LATER = "2026-03-03T09:00:00Z"
CREATED = doc(
    "order.created",
    "o1",
    T0,
    event_id="e-1",
    merchant_id="m-1",
    items=[{"sku": "a", "quantity": 2, "ship_within_hours": 72}],
    ship_to={"country": "HK", "postcode": "999077"},
)


def _with(**changes: Any) -> bytes:
    body = {**CREATED, **changes}
    return orjson.dumps({k: v for k, v in body.items() if v is not None})


def _error(raw: bytes | str) -> ContractError:
    with pytest.raises(ContractError) as caught:
        parse_event(raw)
    return caught.value


def test_a_valid_order_created_parses_with_utc_times() -> None:
    event = parse_event(_with(occurred_at="2026-03-02T17:00:00+08:00"))
    assert event.type == "order.created"
    assert event.occurred_at.isoformat() == "2026-03-02T09:00:00+00:00"


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (_with(occurred_at="2026-03-02T09:00:00"), "occurred_at", "timezone"),
        (_with(occurred_at=1772442000), "occurred_at", "valid datetime"),
        (_with(occurred_at="1969-12-31T23:59:59Z"), "occurred_at", "between"),
        (_with(occurred_at="9999-01-01T00:00:00Z"), "occurred_at", "between"),
        (_with(type="order.teleported"), "type", "unknown event type"),
        (_with(type=None), "type", "missing"),
        (_with(merchant_id=None), "merchant_id", "required"),
        (_with(event_id=""), "event_id", "at least 1"),
        (_with(items=[]), "items", "at least 1"),
        (_with(items=[{"sku": "a", "quantity": "2"}]), "items.0.quantity", "valid integer"),
        (_with(items=[{"sku": "a", "quantity": 0}]), "items.0.quantity", "greater than"),
        (_with(items=[{"sku": "a", "quantity": 1, "ship_within": 3}]), "items.0.ship_within", ""),
        (_with(ship_to={"country": "Hong Kong", "postcode": "1"}), "ship_to.country", "pattern"),
        (_with(colour="red"), "colour", "Extra inputs"),
        (b"{not json", "(message)", "not valid JSON"),
        (b"[1, 2]", "(message)", "JSON object"),
        (b"\xff\xfe", "(message)", "not JSON"),
        (b"plain text, not an event", "(message)", "not JSON (a message is one JSON object)"),
        (b'{"event_id": "e1", "type" 1}', "(message)", "at column 27 of the line"),
        (b'{\n"event_id":\n x}', "(message)", "at line 3 of the message, column 2"),
        (b" " * (MAX_EVENT_BYTES + 1), "(message)", "larger than"),
    ],
)
def test_contract_violations_name_the_field_and_reason(raw: bytes, field: str, reason: str) -> None:
    error = _error(raw)
    assert error.field == field
    assert reason in error.reason


def test_restock_contact_needs_the_agreed_arrival_time() -> None:
    body = doc("order.consumer_contacted", "o1", T0, outcome="restock")
    assert _error(orjson.dumps(body)).field == "new_ship_by"


def test_restock_arrival_time_must_follow_the_contact() -> None:
    body = doc(
        "order.consumer_contacted", "o1", T0, outcome="restock", new_ship_by="2026-03-01T00:00:00Z"
    )
    error = _error(orjson.dumps(body))
    assert (error.field, error.reason) == ("new_ship_by", "must be after occurred_at")


def test_cancellation_review_decision_is_approved_or_rejected() -> None:
    body = doc("cancellation.reviewed", "o1", T0, cancellation_id="c", decision="maybe")
    assert _error(orjson.dumps(body)).field == "decision"


def test_a_duplicate_event_id_with_a_different_body_is_rejected(policy: Policy) -> None:
    uow = MemoryUnitOfWork()
    record_event(parse_event(_with()), uow, T0, policy)
    record_event(parse_event(_with()), uow, T0, policy)  # same body: harmless
    with pytest.raises(DuplicateEventId) as caught:
        record_event(parse_event(_with(merchant_id="m-2")), uow, T0, policy)
    assert caught.value.field == "event_id"
    assert "different event" in caught.value.reason


def test_the_published_schema_covers_every_event_type() -> None:
    schema = contract_schema()
    mapping = schema["discriminator"]["mapping"]
    assert set(mapping) == {
        "order.created",
        "order.shipped",
        "order.collected",
        "order.stockout_declared",
        "order.consumer_contacted",
        "cancellation.requested",
        "cancellation.reviewed",
        "customs.clearance_failed",
        "refund.completed",
        "logistics.tracked",
        "merchant.refused_shipment",
        "complaint.upheld",
        "announcement.published",
        "ipr.complaint_filed",
        "ipr.response_filed",
        "ipr.complaint_decided",
        "cs.inquiry_received",
        "cs.inquiry_answered",
        "order.delivered",
        "return.requested",
        "calendar.closure_declared",
    }
    assert schema["$defs"]["OrderCreated"]["additionalProperties"] is False


def _case(kind: str, **fields: Any) -> bytes:
    return orjson.dumps(
        {"type": kind, "event_id": "e-9", "occurred_at": "2026-03-02T09:00:00Z", **fields}
    )


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (_case("ipr.complaint_filed", complaint_id="C1", merchant_id="m", order_id="o1"),
         "order_id", "must be 'ipr:C1'"),
        (_case("ipr.complaint_filed", merchant_id="m"), "complaint_id", "required"),
        (_case("ipr.complaint_filed", complaint_id="C" * 125, merchant_id="m"),
         "complaint_id", "at most 124"),
        (_case("cs.inquiry_received", inquiry_id=" Q1"), "inquiry_id", "pattern"),
        (_case("ipr.complaint_decided", complaint_id="C1", decision="maybe"), "decision", ""),
        (_case("order.delivered", order_id="ipr:C1"), "order_id", "reserved"),
        (_case("return.requested", order_id="o1"), "return_id", "required"),
        (_case("calendar.closure_declared", closure_id="t", starts_at="2026-03-02T09:00:00Z",
               ends_at="2026-03-02T08:00:00Z"), "ends_at", "after starts_at"),
        (_case("calendar.closure_declared", closure_id="t", starts_at="2026-03-02T09:00:00Z",
               ends_at="2026-06-02T09:00:00Z"), "ends_at", "at most 90 days"),
    ],
)  # fmt: skip
def test_working_time_events_name_the_field_and_reason(raw: bytes, field: str, reason: str) -> None:
    error = _error(raw)
    assert error.field == field
    assert reason in error.reason


def test_a_case_event_takes_its_stream_key_from_its_case_id() -> None:
    assert parse_event(_case("cs.inquiry_received", inquiry_id="Q1")).order_id == "cs:Q1"
    assert parse_event(_case("ipr.response_filed", complaint_id="C1")).order_id == "ipr:C1"


def test_the_published_schema_accepts_valid_events_and_refuses_what_the_contract_refuses() -> None:
    validator = Draft202012Validator(contract_schema())
    valid = [
        CREATED,
        doc("order.consumer_contacted", "o1", T0, outcome="restock", new_ship_by=LATER),
        orjson.loads(_case("ipr.complaint_filed", complaint_id="C1", merchant_id="m")),
        orjson.loads(
            _case("calendar.closure_declared", closure_id="t", starts_at=AT, ends_at=LATER)
        ),
    ]
    for document in valid:
        parse_event(orjson.dumps(document))
        assert not list(validator.iter_errors(document)), document["type"]
    refused = [
        {**CREATED, "colour": "red"},
        {**CREATED, "event_id": "e 1"},
        {**CREATED, "items": []},
        {**CREATED, "type": "order.teleported"},
    ]
    for document in refused:
        assert list(validator.iter_errors(document)), document
