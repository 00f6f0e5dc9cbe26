"""Event contract v3: the JSON messages producers publish, one object per message.

Every event is a frozen pydantic model. Parsing is strict (no string-to-number coercion, no
naive timestamps, no unknown fields) because a silently misread field moves a deadline.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal, get_args

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

CONTRACT_VERSION = 3
MAX_EVENT_BYTES = 64 * 1024
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
MAX_CLOSURE = timedelta(days=90)
"""A declared closure pauses working time; one longer than this is a mistake, not a closure."""


class ContractError(ValueError):
    """An event that breaks the contract; `field` names the offending field (dotted path)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _in_utc(value: datetime) -> datetime:
    """Normalise to UTC and keep timestamps inside a sane window (guards against epoch-0 bugs)."""
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value.astimezone(UTC)


UtcTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
ID_PATTERN = r"^[\x21-\x7e]+$"
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=ID_PATTERN)]
CASE_PREFIXES = ("ipr:", "cs:")
"""Stream keys reserved for cases that are not orders (IPR complaints, inquiries)."""
Text = Annotated[str, Field(min_length=1, max_length=128)]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    event_id: Id
    occurred_at: UtcTime
    order_id: Id
    schema_version: Literal[1, 2, 3] = 2
    """v2 adds logistics.tracked, merchant.refused_shipment, complaint.upheld and
    announcement.published; v3 the working-time events (IPR, customer service, delivery,
    returns, closures). Earlier events are accepted as they are. The default stays 2 so the
    digest of an event stored before v3 does not change when it is redelivered."""

    @model_validator(mode="after")
    def _case_keys_are_reserved(self) -> _Event:
        if not isinstance(self, _CaseEvent) and self.order_id.startswith(CASE_PREFIXES):
            raise ValueError("order_id: the prefixes 'ipr:' and 'cs:' are reserved for cases")
        return self


class Item(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    sku: Text
    quantity: Annotated[int, Field(ge=1, le=100_000)]
    ship_within_hours: Annotated[float, Field(gt=0, le=24 * 365)] | None = Field(
        default=None,
        description="Special commodity (2.1.2): the shipping time on its detail page, in hours.",
    )


class ShipTo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
    postcode: Annotated[str, Field(min_length=1, max_length=16)]


class OrderCreated(_Event):
    type: Literal["order.created"]
    merchant_id: Id
    items: Annotated[list[Item], Field(min_length=1, max_length=500)]
    ship_to: ShipTo


class OrderShipped(_Event):
    """The merchant filled in tracking (waybill and carrier)."""

    type: Literal["order.shipped"]
    waybill_no: Id
    carrier: Id


class OrderCollected(_Event):
    """Collection scanned at the overseas warehouse (2.1.1)."""

    type: Literal["order.collected"]
    waybill_no: Id
    carrier: Id


class StockoutDeclared(_Event):
    type: Literal["order.stockout_declared"]


class ConsumerContacted(_Event):
    """The merchant contacted the consumer about a stock-out (3.2.2)."""

    type: Literal["order.consumer_contacted"]
    outcome: Literal["restock", "consumer_agreed_cancel"]
    new_ship_by: UtcTime | None = Field(
        default=None, description="With outcome 'restock': the arrival time agreed (3.2.2)."
    )

    @model_validator(mode="after")
    def _restock_needs_a_date(self) -> ConsumerContacted:
        if self.outcome == "restock" and self.new_ship_by is None:
            raise ValueError("new_ship_by: required when outcome is 'restock'")
        if self.outcome != "restock" and self.new_ship_by is not None:
            raise ValueError("new_ship_by: only allowed when outcome is 'restock'")
        if self.new_ship_by is not None and self.new_ship_by <= self.occurred_at:
            raise ValueError("new_ship_by: must be after occurred_at")
        return self


class CancellationRequested(_Event):
    type: Literal["cancellation.requested"]
    cancellation_id: Id


class CancellationReviewed(_Event):
    type: Literal["cancellation.reviewed"]
    cancellation_id: Id
    decision: Literal["approved", "rejected"]


class CustomsClearanceFailed(_Event):
    """Customs clearance failed; the merchant must help refund within the limit (2.3.1)."""

    type: Literal["customs.clearance_failed"]


class RefundCompleted(_Event):
    type: Literal["refund.completed"]


class AnnouncementPublished(_Event):
    """A platform announcement of a special period (2.1.3): orders created in the window ship
    within `ship_within_hours` instead of the spot limit. It concerns every order, so its
    `order_id` is "*" (or left out)."""

    type: Literal["announcement.published"]
    order_id: Literal["*"] = "*"
    announcement_id: Id
    applies_from: UtcTime
    applies_until: UtcTime
    ship_within_hours: Annotated[float, Field(gt=0, le=24 * 365)]

    @model_validator(mode="after")
    def _window_is_forward(self) -> AnnouncementPublished:
        if self.applies_until <= self.applies_from:
            raise ValueError("applies_until: must be after applies_from")
        return self


class LogisticsTracked(_Event):
    """A logistics trace update from the carrier (3.3): where the parcel is going and how."""

    type: Literal["logistics.tracked"]
    waybill_no: Id
    carrier: Id
    status: Literal["collected", "in_transit", "out_for_delivery", "delivered", "exception"]
    destination_postcode: Annotated[str, Field(min_length=1, max_length=16)]


class RefusedShipment(_Event):
    """The merchant refuses to ship, or asks for more money to ship (2.1.4 / 3.2.1(2))."""

    type: Literal["merchant.refused_shipment"]
    reason: Literal["refused", "price_increase"]


class ComplaintUpheld(_Event):
    """A consumer complaint the platform upheld, with the platform's judgement (3.1 / 2.4)."""

    type: Literal["complaint.upheld"]
    category: Literal["shortage", "wrong_item", "packaging"]
    severity: Literal["slight", "serious"]


class _CaseEvent(_Event):
    """An event about a case that is not an order (an IPR complaint, a customer-service
    inquiry). The case is its own stream: `order_id` is "<prefix>:<case id>" (`parse_event`
    fills it in when left out), so the store keys, orders and replays it like an order."""

    stream_prefix: ClassVar[str]
    case_field: ClassVar[str]

    @model_validator(mode="after")
    def _stream_key_matches(self) -> _CaseEvent:
        expected = f"{self.stream_prefix}:{getattr(self, self.case_field)}"
        if self.order_id != expected:
            raise ValueError(f"order_id: must be {expected!r} (or left out)")
        return self


class _IprEvent(_CaseEvent):
    stream_prefix = "ipr"
    case_field = "complaint_id"
    complaint_id: Annotated[str, Field(min_length=1, max_length=124, pattern=ID_PATTERN)]


class IprComplaintFiled(_IprEvent):
    """The platform received an IPR complaint against a merchant (the respondent): the 2
    working days to respond and the 10 working days of the platform's review start."""

    type: Literal["ipr.complaint_filed"]
    merchant_id: Id


class IprResponseFiled(_IprEvent):
    """The respondent filed its response, with all supporting materials."""

    type: Literal["ipr.response_filed"]


class IprComplaintDecided(_IprEvent):
    """The platform examined the complaint (or the complainant withdrew it)."""

    type: Literal["ipr.complaint_decided"]
    decision: Literal["upheld", "rejected", "withdrawn"]


class _InquiryEvent(_CaseEvent):
    stream_prefix = "cs"
    case_field = "inquiry_id"
    inquiry_id: Annotated[str, Field(min_length=1, max_length=125, pattern=ID_PATTERN)]


class InquiryReceived(_InquiryEvent):
    """A consumer's email reached customer service: 24 h to answer, in its working hours."""

    type: Literal["cs.inquiry_received"]


class InquiryAnswered(_InquiryEvent):
    type: Literal["cs.inquiry_answered"]


class OrderDelivered(_Event):
    """The consumer received the parcel: the 30-day returns window starts."""

    type: Literal["order.delivered"]


class ReturnRequested(_Event):
    type: Literal["return.requested"]
    return_id: Id


class ClosureDeclared(_Event):
    """A platform-declared closure (a typhoon signal, an office closure): working-time clocks
    on the named calendars (all when none are named) pause for it; open ones are re-judged.
    It concerns every case, so its `order_id` is "*" (or left out)."""

    type: Literal["calendar.closure_declared"]
    order_id: Literal["*"] = "*"
    closure_id: Id
    starts_at: UtcTime
    ends_at: UtcTime
    calendars: Annotated[list[Id], Field(max_length=50)] = Field(default_factory=list)
    reason: Annotated[str, Field(max_length=256)] = ""

    @model_validator(mode="after")
    def _window_is_forward(self) -> ClosureDeclared:
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at: must be after starts_at")
        if self.ends_at - self.starts_at > MAX_CLOSURE:
            raise ValueError(f"ends_at: a closure lasts at most {MAX_CLOSURE.days} days")
        return self


EVENT_MODELS: tuple[type[_Event], ...] = (
    OrderCreated,
    OrderShipped,
    OrderCollected,
    StockoutDeclared,
    ConsumerContacted,
    CancellationRequested,
    CancellationReviewed,
    CustomsClearanceFailed,
    RefundCompleted,
    LogisticsTracked,
    RefusedShipment,
    ComplaintUpheld,
    AnnouncementPublished,
    IprComplaintFiled,
    IprResponseFiled,
    IprComplaintDecided,
    InquiryReceived,
    InquiryAnswered,
    OrderDelivered,
    ReturnRequested,
    ClosureDeclared,
)
Event = Annotated[
    OrderCreated
    | OrderShipped
    | OrderCollected
    | StockoutDeclared
    | ConsumerContacted
    | CancellationRequested
    | CancellationReviewed
    | CustomsClearanceFailed
    | RefundCompleted
    | LogisticsTracked
    | RefusedShipment
    | ComplaintUpheld
    | AnnouncementPublished
    | IprComplaintFiled
    | IprResponseFiled
    | IprComplaintDecided
    | InquiryReceived
    | InquiryAnswered
    | OrderDelivered
    | ReturnRequested
    | ClosureDeclared,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = tuple(
    get_args(model.model_fields["type"].annotation)[0] for model in EVENT_MODELS
)
_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
_CASE_STREAMS: dict[str, tuple[str, str]] = {
    get_args(model.model_fields["type"].annotation)[0]: (model.stream_prefix, model.case_field)
    for model in EVENT_MODELS
    if issubclass(model, _CaseEvent)
}
CASE_EVENT_TYPES: frozenset[str] = frozenset(_CASE_STREAMS)
"""Events of a case stream (IPR, customer service): keyed by the case, not by an order."""
PLATFORM_WIDE_TYPES: frozenset[str] = frozenset(
    get_args(model.model_fields["type"].annotation)[0]
    for model in EVENT_MODELS
    if model.model_fields["order_id"].default == "*"
)
"""Events that concern every stream (announcements, closures): their `order_id` is "*"."""


def stream_key(document: dict[str, Any]) -> Any:
    """The stream a decoded event belongs to, as parsing keys it: its `order_id`, or for a case
    event that leaves it out, the key its case id gives. Not validated: a bad document may give
    anything, and then does not parse."""
    kind = document.get("type")
    if isinstance(kind, str):
        document = _with_stream_key(kind, document)
    return document.get("order_id")


def parse_event(raw: bytes | str) -> Event:
    """Parse one JSON message into an event, or raise ContractError naming the field."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > MAX_EVENT_BYTES:
        raise ContractError("(message)", f"larger than {MAX_EVENT_BYTES} bytes")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError("(message)", json_problem(raw, exc)) from None
    return parse_document(document, raw)


def json_problem(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """What is wrong with a message that does not decode, in words that fit a JSON-lines file:
    the decoder's 'line 1 column 44' is a position inside the message, which a reader of a file
    takes for a file line; and plain text gets 'not JSON', not the decoder's 'expected null'."""
    if raw.lstrip()[:1] not in (b"{", b"["):
        return "not JSON (a message is one JSON object)"
    where = f"column {exc.colno} of the line"
    if exc.lineno > 1:
        where = f"line {exc.lineno} of the message, column {exc.colno}"
    return f"not valid JSON: {exc.msg} at {where}"


def parse_document(document: Any, raw: bytes | None = None) -> Event:
    """Validate an already-decoded JSON document against the contract; `raw`, the JSON it was
    decoded from, spares encoding it again when the document needs no stream key."""
    if not isinstance(document, dict):
        raise ContractError("(message)", "must be a JSON object")
    kind = document.get("type")
    if kind is None:
        raise ContractError("type", "missing")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        raise ContractError("type", f"unknown event type {kind!r}")
    keyed = _with_stream_key(kind, document)
    if raw is None or keyed is not document:
        raw = orjson.dumps(keyed)
    try:
        return _ADAPTER.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise _first_error(exc) from None


def _with_stream_key(kind: str, document: dict[str, Any]) -> dict[str, Any]:
    """A case event (IPR, customer service) may leave out `order_id`: its case id gives it."""
    if kind not in _CASE_STREAMS or "order_id" in document:
        return document
    prefix, field = _CASE_STREAMS[kind]
    case_id = document.get(field)
    key = f"{prefix}:{case_id}" if isinstance(case_id, str) else ""
    if len(key) > 128 or not re.fullmatch(ID_PATTERN, key):
        key = f"{prefix}:"  # a bad case id is reported under its own name, not as order_id's
    return {**document, "order_id": key}


def _first_error(exc: ValidationError) -> ContractError:
    error = exc.errors(include_url=False)[0]
    path = [str(part) for part in error["loc"]]
    if path and path[0] in EVENT_TYPES:  # the discriminator's branch name is noise
        path = path[1:]
    message = str(error["msg"]).removeprefix("Value error, ")
    field, sep, reason = message.partition(": ")
    if not path and sep and " " not in field:  # a model validator that names its field
        return ContractError(field, reason)
    return ContractError(".".join(path) or "(message)", message)


def canonical_body(event: Event) -> bytes:
    """The event as canonical JSON: the same event always gives the same bytes. (The
    serializer `model_dump` wraps, called directly: its argument handling was a fifth of the
    digest's cost, paid for every event.)"""
    document = event.__pydantic_serializer__.to_python(event, mode="json")
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def body_digest(event: Event) -> str:
    """Fingerprint used to tell a harmless duplicate from an `event_id` reused for another body."""
    return hashlib.sha256(canonical_body(event)).hexdigest()


def contract_schema() -> dict[str, Any]:
    """The JSON Schema of the contract, as published by `slatimer schema`."""
    schema = _ADAPTER.json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://slatimer.example/schema/event-v{CONTRACT_VERSION}.json"
    schema["title"] = f"slatimer event contract v{CONTRACT_VERSION}"
    return schema
