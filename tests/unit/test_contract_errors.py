"""The contract's refusals, side by side with the wording the pydantic contract gave.

Each row is a bad message, the field the refusal names, the reason as the pydantic-based
contract worded it (recorded verbatim before the contract moved to msgspec) and the part of
that meaning the refusal must still carry. The wording may improve; the field and the meaning
may not change."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import orjson
import pytest

from models.events import MAX_EVENT_BYTES, ContractError, OrderCreated, parse_event

AT = "2026-03-02T09:00:00Z"
LATER = "2026-03-03T09:00:00Z"
ID = r"'^[\x21-\x7e]+$'"


def created(**changes: Any) -> bytes:
    body: dict[str, Any] = {
        "type": "order.created",
        "event_id": "e-1",
        "occurred_at": AT,
        "order_id": "o1",
        "merchant_id": "m-1",
        "items": [{"sku": "a", "quantity": 2, "ship_within_hours": 72}],
        "ship_to": {"country": "HK", "postcode": "999077"},
    }
    body.update(changes)
    return orjson.dumps({key: value for key, value in body.items() if value is not DROP})


def item(**changes: Any) -> bytes:
    return created(items=[{"sku": "a", "quantity": 1, **changes}])


def event(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, "event_id": "e-9", "occurred_at": AT, **fields})


DROP = object()
CONTACT = {"order_id": "o1", "outcome": "restock"}
WINDOW = {"announcement_id": "a", "applies_from": AT, "applies_until": LATER}
CLOSURE = {"closure_id": "t", "starts_at": AT, "ends_at": LATER}
IPR = {"complaint_id": "C1", "merchant_id": "m"}

# (message, field, the pydantic contract's reason, what the reason must still say)
REFUSALS: list[tuple[bytes, str, str, str]] = [
    # timestamps: RFC 3339 with an offset, inside 2000-2100
    (created(occurred_at="2026-03-02T09:00:00"), "occurred_at",
     "Input should have timezone info", "timezone"),
    (created(occurred_at=1772442000), "occurred_at",
     "Input should be a valid datetime", "valid datetime"),
    (created(occurred_at=None), "occurred_at",
     "Input should be a valid datetime", "valid datetime"),
    (created(occurred_at="yesterday"), "occurred_at",
     "Input should be a valid datetime, input is too short", "valid datetime"),
    (created(occurred_at="2026-02-30T09:00:00Z"), "occurred_at",
     "Input should be a valid datetime, day value is outside expected range", "valid datetime"),
    (created(occurred_at="1969-12-31T23:59:59Z"), "occurred_at",
     "must be between 2000-01-01 and 2100-01-01", "must be between 2000-01-01 and 2100-01-01"),
    (created(occurred_at="2000-01-01T07:59:59+08:00"), "occurred_at",
     "must be between 2000-01-01 and 2100-01-01", "must be between 2000-01-01 and 2100-01-01"),
    (created(occurred_at="2100-01-01T00:00:00Z"), "occurred_at",
     "must be between 2000-01-01 and 2100-01-01", "must be between 2000-01-01 and 2100-01-01"),
    (created(occurred_at="9999-01-01T00:00:00Z"), "occurred_at",
     "must be between 2000-01-01 and 2100-01-01", "must be between 2000-01-01 and 2100-01-01"),
    (created(occurred_at="0001-01-01T00:00:00+01:00"), "occurred_at",
     "must be between 2000-01-01 and 2100-01-01", "must be between 2000-01-01 and 2100-01-01"),
    (created(occurred_at="9999-12-31T23:59:59-01:00"), "occurred_at",
     "must be between 2000-01-01 and 2100-01-01", "must be between 2000-01-01 and 2100-01-01"),
    # the type, and what decides the rest of the message
    (created(type="order.teleported"), "type",
     "unknown event type 'order.teleported'", "unknown event type 'order.teleported'"),
    (created(type=DROP), "type", "missing", "missing"),
    (created(type=None), "type", "missing", "missing"),
    (created(type=1), "type", "unknown event type 1", "unknown event type 1"),
    # required fields, wrong types, unknown fields
    (created(merchant_id=DROP), "merchant_id", "Field required", "required"),
    (created(merchant_id=None), "merchant_id", "Input should be a valid string", "valid string"),
    (created(merchant_id=7), "merchant_id", "Input should be a valid string", "valid string"),
    (created(colour="red"), "colour", "Extra inputs are not permitted", "not permitted"),
    (created(schema_version=4), "schema_version", "Input should be 1, 2 or 3", "1, 2 or 3"),
    (created(schema_version="3"), "schema_version", "Input should be 1, 2 or 3", "1, 2 or 3"),
    # ids: printable ASCII, 1-128 characters
    (created(event_id=""), "event_id",
     "String should have at least 1 character", "at least 1 character"),
    (created(event_id="e 1"), "event_id", f"String should match pattern {ID}", f"pattern {ID}"),
    (created(event_id="e" * 129), "event_id",
     "String should have at most 128 characters", "at most 128 characters"),
    (created(order_id="ordé"), "order_id", f"String should match pattern {ID}", f"pattern {ID}"),
    (created(event_id="e-1\n"), "event_id", f"String should match pattern {ID}", f"pattern {ID}"),
    (created(merchant_id="m\x7f"), "merchant_id",
     f"String should match pattern {ID}", f"pattern {ID}"),
    (created(order_id="cs:Q1"), "order_id",
     "the prefixes 'ipr:' and 'cs:' are reserved for cases", "reserved for cases"),
    # items, nested: the path names the item and its field
    (created(items=[]), "items",
     "List should have at least 1 item after validation, not 0", "at least 1 item"),
    (created(items=[{"sku": "a", "quantity": 1}] * 501), "items",
     "List should have at most 500 items after validation, not 501", "at most 500 items"),
    (created(items={"sku": "a"}), "items", "Input should be a valid array", "valid array"),
    (created(items=["a"]), "items.0", "Input should be an object", "an object"),
    (item(quantity="2"), "items.0.quantity", "Input should be a valid integer", "valid integer"),
    (item(quantity=2.5), "items.0.quantity", "Input should be a valid integer", "valid integer"),
    (item(quantity=True), "items.0.quantity", "Input should be a valid integer", "valid integer"),
    (item(quantity=0), "items.0.quantity",
     "Input should be greater than or equal to 1", "greater than or equal to 1"),
    (item(quantity=100_001), "items.0.quantity",
     "Input should be less than or equal to 100000", "less than or equal to 100000"),
    (created(items=[{"sku": "a", "quantity": 1}, {"sku": "b"}]), "items.1.quantity",
     "Field required", "required"),
    (item(ship_within=3), "items.0.ship_within", "Extra inputs are not permitted", "not permitted"),
    (item(sku=""), "items.0.sku",
     "String should have at least 1 character", "at least 1 character"),
    (item(sku="s" * 129), "items.0.sku",
     "String should have at most 128 characters", "at most 128 characters"),
    (item(ship_within_hours=0), "items.0.ship_within_hours",
     "Input should be greater than 0", "greater than 0"),
    (item(ship_within_hours=9000), "items.0.ship_within_hours",
     "Input should be less than or equal to 8760", "less than or equal to 8760"),
    (item(ship_within_hours="72"), "items.0.ship_within_hours",
     "Input should be a valid number", "valid number"),
    (created(ship_to={"country": "Hong Kong", "postcode": "1"}), "ship_to.country",
     "String should match pattern '^[A-Z]{2}$'", "pattern '^[A-Z]{2}$'"),
    (created(ship_to={"country": "hk", "postcode": "1"}), "ship_to.country",
     "String should match pattern '^[A-Z]{2}$'", "pattern '^[A-Z]{2}$'"),
    (created(ship_to={"country": "HK\n", "postcode": "1"}), "ship_to.country",
     "String should match pattern '^[A-Z]{2}$'", "pattern '^[A-Z]{2}$'"),
    (created(ship_to={"country": "ÅÄ", "postcode": "1"}), "ship_to.country",
     "String should match pattern '^[A-Z]{2}$'", "pattern '^[A-Z]{2}$'"),
    (created(ship_to={"country": "HK", "postcode": "1" * 17}), "ship_to.postcode",
     "String should have at most 16 characters", "at most 16 characters"),
    (created(ship_to={"country": "HK"}), "ship_to.postcode", "Field required", "required"),
    (created(ship_to="HK"), "ship_to", "Input should be an object", "an object"),
    (created(ship_to={"country": "HK", "postcode": "1", "city": "x"}), "ship_to.city",
     "Extra inputs are not permitted", "not permitted"),
    # the message as a whole
    (b"[1, 2]", "(message)", "must be a JSON object", "must be a JSON object"),
    (b'"hello"', "(message)", "must be a JSON object", "must be a JSON object"),
    (b"", "(message)", "not JSON (a message is one JSON object)", "not JSON"),
    (b"\xff\xfe", "(message)", "not JSON (a message is one JSON object)", "not JSON"),
    (created() + b" x", "(message)",
     "not valid JSON: unexpected content after document at column 221 of the line",
     "not valid JSON: unexpected content after document at column 221 of the line"),
    (b'{"type": "order.delivered", "event_id": "e\\ud800"}', "(message)",
     "not valid JSON: no low surrogate in string at column 43 of the line",
     "not valid JSON: no low surrogate in string at column 43 of the line"),
    (b" " * (MAX_EVENT_BYTES + 1), "(message)",
     "larger than 65536 bytes", "larger than 65536 bytes"),
    # rules across fields
    (event("order.consumer_contacted", **CONTACT), "new_ship_by",
     "required when outcome is 'restock'", "required when outcome is 'restock'"),
    (event("order.consumer_contacted", **CONTACT, new_ship_by="2026-03-01T00:00:00Z"),
     "new_ship_by", "must be after occurred_at", "must be after occurred_at"),
    (event("order.consumer_contacted", **{**CONTACT, "outcome": "consumer_agreed_cancel"},
           new_ship_by=LATER), "new_ship_by",
     "only allowed when outcome is 'restock'", "only allowed when outcome is 'restock'"),
    (event("order.consumer_contacted", **CONTACT, new_ship_by="2100-01-01T08:00:00+08:00"),
     "new_ship_by", "must be between 2000-01-01 and 2100-01-01",
     "must be between 2000-01-01 and 2100-01-01"),
    (event("order.consumer_contacted", **CONTACT, new_ship_by="2026-03-05T09:00:00"),
     "new_ship_by", "Input should have timezone info", "timezone"),
    (event("order.consumer_contacted", **{**CONTACT, "outcome": "later"}), "outcome",
     "Input should be 'restock' or 'consumer_agreed_cancel'",
     "'restock' or 'consumer_agreed_cancel'"),
    (event("cancellation.reviewed", order_id="o1", cancellation_id="c", decision="maybe"),
     "decision", "Input should be 'approved' or 'rejected'", "'approved' or 'rejected'"),
    (event("announcement.published", **WINDOW, order_id="o1", ship_within_hours=48),
     "order_id", "Input should be '*'", "'*'"),
    (event("announcement.published", **{**WINDOW, "applies_until": "2026-03-01T00:00:00Z"},
           ship_within_hours=48), "applies_until",
     "must be after applies_from", "must be after applies_from"),
    (event("announcement.published", **WINDOW, ship_within_hours=0), "ship_within_hours",
     "Input should be greater than 0", "greater than 0"),
    (event("announcement.published", **{**WINDOW, "applies_from": "2026-03-02T09:00:00"},
           ship_within_hours=4), "applies_from", "Input should have timezone info", "timezone"),
    # case events: the stream key and the case ids
    (event("ipr.complaint_filed", **IPR, order_id="o1"), "order_id",
     "must be 'ipr:C1' (or left out)", "must be 'ipr:C1' (or left out)"),
    (event("ipr.complaint_filed", merchant_id="m"), "complaint_id", "Field required", "required"),
    (event("ipr.complaint_filed", **{**IPR, "complaint_id": "C" * 125}), "complaint_id",
     "String should have at most 124 characters", "at most 124 characters"),
    (event("ipr.complaint_filed", **{**IPR, "complaint_id": 5}), "complaint_id",
     "Input should be a valid string", "valid string"),
    (event("ipr.complaint_filed", **IPR, order_id=""), "order_id",
     "String should have at least 1 character", "at least 1 character"),
    (event("ipr.complaint_filed", **IPR, order_id=None), "order_id",
     "Input should be a valid string", "valid string"),
    (event("cs.inquiry_received", inquiry_id=" Q1"), "inquiry_id",
     f"String should match pattern {ID}", f"pattern {ID}"),
    (event("cs.inquiry_received", inquiry_id="Q" * 126), "inquiry_id",
     "String should have at most 125 characters", "at most 125 characters"),
    (event("ipr.complaint_decided", complaint_id="C1", decision="maybe"), "decision",
     "Input should be 'upheld', 'rejected' or 'withdrawn'", "'upheld', 'rejected' or 'withdrawn'"),
    (event("order.delivered", order_id="ipr:C1"), "order_id",
     "the prefixes 'ipr:' and 'cs:' are reserved for cases", "reserved for cases"),
    (event("return.requested", order_id="o1"), "return_id", "Field required", "required"),
    # closures
    (event("calendar.closure_declared", **{**CLOSURE, "ends_at": "2026-03-02T08:00:00Z"}),
     "ends_at", "must be after starts_at", "must be after starts_at"),
    (event("calendar.closure_declared", **{**CLOSURE, "ends_at": "2026-06-02T09:00:00Z"}),
     "ends_at", "a closure lasts at most 90 days", "a closure lasts at most 90 days"),
    (event("calendar.closure_declared", **{**CLOSURE, "ends_at": "2100-01-02T00:00:00Z"}),
     "ends_at", "must be between 2000-01-01 and 2100-01-01",
     "must be between 2000-01-01 and 2100-01-01"),
    (event("calendar.closure_declared", **CLOSURE, calendars=["ok", ""]), "calendars.1",
     "String should have at least 1 character", "at least 1 character"),
    (event("calendar.closure_declared", **CLOSURE, calendars=["c"] * 51), "calendars",
     "List should have at most 50 items after validation, not 51", "at most 50 items"),
    (event("calendar.closure_declared", **CLOSURE, reason="r" * 257), "reason",
     "String should have at most 256 characters", "at most 256 characters"),
    # the other closed vocabularies
    (event("logistics.tracked", order_id="o1", waybill_no="w", carrier="c", status="lost",
           destination_postcode="1"), "status",
     "Input should be 'collected', 'in_transit', 'out_for_delivery', 'delivered' or 'exception'",
     "'collected', 'in_transit', 'out_for_delivery', 'delivered' or 'exception'"),
    (event("merchant.refused_shipment", order_id="o1", reason="busy"), "reason",
     "Input should be 'refused' or 'price_increase'", "'refused' or 'price_increase'"),
    (event("complaint.upheld", order_id="o1", category="shortage", severity="mild"), "severity",
     "Input should be 'slight' or 'serious'", "'slight' or 'serious'"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "field", "pydantic_reason", "meaning"), REFUSALS)
def test_a_refusal_names_the_field_and_keeps_the_reasons_meaning(
    raw: bytes, field: str, pydantic_reason: str, meaning: str
) -> None:
    with pytest.raises(ContractError) as caught:
        parse_event(raw)
    assert caught.value.field == field, f"was: {field}: {pydantic_reason}"
    assert meaning in caught.value.reason, f"was: {pydantic_reason!r}"


def test_every_timestamp_is_stored_in_utc() -> None:
    contact = parse_event(
        event(
            "order.consumer_contacted",
            **CONTACT,
            new_ship_by="2026-03-05T17:00:00+08:00",
        )
    )
    window = parse_event(
        event(
            "announcement.published",
            announcement_id="a",
            applies_from="2026-03-02T17:00:00+08:00",
            applies_until="2026-03-03T08:00:00-01:00",
            ship_within_hours=48,
        )
    )
    stamps = [contact.occurred_at, contact.new_ship_by, window.applies_from, window.applies_until]
    assert [stamp.utcoffset() for stamp in stamps if stamp] == [timedelta(0)] * 4
    assert [stamp.isoformat() for stamp in stamps if stamp][1:] == [
        "2026-03-05T09:00:00+00:00",
        "2026-03-02T09:00:00+00:00",
        "2026-03-03T09:00:00+00:00",
    ]


def test_decimals_past_the_microsecond_are_cut_not_rounded() -> None:
    """Go's RFC3339Nano writes 9 decimals: the contract has always cut them (a redelivered
    event keeps the digest it was stored with), where msgspec alone would round up."""
    contact = parse_event(
        event(
            "order.consumer_contacted",
            **{**CONTACT, "occurred_at": "2026-03-02T09:00:00.999999999Z"},
            new_ship_by="2026-03-05T17:00:00.1234567+08:00",
        )
    )
    assert contact.occurred_at.isoformat() == "2026-03-02T09:00:00.999999+00:00"
    assert contact.new_ship_by is not None
    assert contact.new_ship_by.isoformat() == "2026-03-05T09:00:00.123456+00:00"
    sku = parse_event(created(items=[{"sku": "12:00:00.1234567", "quantity": 1}]))
    assert isinstance(sku, OrderCreated) and sku.items[0].sku == "12:00:00.1234567"
