"""Event contract v3: the JSON messages producers publish, one object per message.

Every event is a frozen msgspec Struct, decoded straight from the message's bytes (a tagged
union on `type`). Decoding is strict (no string-to-number coercion, no naive timestamps, no
unknown fields) because a silently misread field moves a deadline. The rules that span fields
run in `__post_init__`; a refusal names its field and reason (`ContractError`), worded as the
contract has always worded them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from types import UnionType
from typing import (
    Annotated,
    Any,
    ClassVar,
    Literal,
    NamedTuple,
    Union,
    get_args,
    get_origin,
)

import msgspec
import orjson
from msgspec import Meta, Struct

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


UtcTime = Annotated[datetime, Meta(tz=True)]
"""Timezone-aware only; `_Event.__post_init__` keeps it inside 2000-2100 and stores it in UTC."""
ID_PATTERN = r"^[\x21-\x7e]+$"
_ID = {"pattern": ID_PATTERN}
"""An id's pattern, in the schema; `_Event.__post_init__` checks it (`_is_id`): msgspec runs a
Python regex per pattern, a microsecond each, and its `$` lets a trailing newline through."""
Id = Annotated[str, Meta(min_length=1, max_length=128, extra_json_schema=_ID)]
CASE_PREFIXES = ("ipr:", "cs:")
"""Stream keys reserved for cases that are not orders (IPR complaints, inquiries)."""
COUNTRY = r"^[A-Z]{2}$"
Text = Annotated[str, Meta(min_length=1, max_length=128)]
Hours = Annotated[float, Meta(gt=0, le=24 * 365)]
Postcode = Annotated[str, Meta(min_length=1, max_length=16)]


class _Frozen(Struct, frozen=True, forbid_unknown_fields=True):
    pass


class _Event(_Frozen, frozen=True, tag_field="type", kw_only=True):
    event_id: Id
    occurred_at: UtcTime
    order_id: Id
    schema_version: Literal[1, 2, 3] = 2
    """v2 adds logistics.tracked, merchant.refused_shipment, complaint.upheld and
    announcement.published; v3 the working-time events (IPR, customer service, delivery,
    returns, closures). Earlier events are accepted as they are. The default stays 2 so the
    digest of an event stored before v3 does not change when it is redelivered."""

    @property
    def type(self) -> str:
        """The event type: the tag the message carries in its `type` field."""
        return str(self.__struct_config__.tag)

    def __post_init__(self) -> None:
        # inlined, as this runs for every event: its calls were most of the decoding cost
        shape = _SHAPES[type(self)]
        ids = "".join(shape.ids(self))  # every id at once: one check on the common path
        if not (ids.isascii() and ids.isprintable()) or " " in ids or shape.id_lists:
            _check_ids(self, shape)
        for name in shape.times:
            value = getattr(self, name)
            if value is not None and (value.tzinfo is not UTC or not EARLIEST <= value < LATEST):
                _store_in_utc(self, name, value)
        self._check()

    def _check(self) -> None:
        """The rules across fields, once every field is valid (raise ContractError)."""
        if self.order_id.startswith(CASE_PREFIXES):
            raise ContractError("order_id", "the prefixes 'ipr:' and 'cs:' are reserved for cases")


def _is_id(value: str) -> bool:
    """`ID_PATTERN`: printable ASCII, no space."""
    return value.isascii() and value.isprintable() and " " not in value


def _check_ids(event: _Event, shape: _Shape) -> None:
    """Name the first id that is not one (and check the lists of ids)."""
    named = [(name, getattr(event, name)) for name in shape.id_names]
    for name in shape.id_lists:
        named += [(f"{name}.{index}", one) for index, one in enumerate(getattr(event, name))]
    for name, value in named:
        if not _is_id(value):
            raise ContractError(name, f"String should match pattern '{ID_PATTERN}'")


def _store_in_utc(event: _Event, name: str, value: datetime) -> None:
    """Normalise to UTC and keep timestamps inside a sane window (guards against epoch-0 bugs)."""
    if not EARLIEST <= value < LATEST:
        raise ContractError(name, f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    if value.tzinfo is not UTC:
        msgspec.structs.force_setattr(event, name, value.astimezone(UTC))


class Item(_Frozen, frozen=True):
    sku: Text
    quantity: Annotated[int, Meta(ge=1, le=100_000)]
    ship_within_hours: (
        Annotated[
            float,
            Meta(
                gt=0,
                le=24 * 365,
                description="Special commodity (2.1.2): the shipping time on its detail page, "
                "in hours.",
            ),
        ]
        | None
    ) = None


class ShipTo(_Frozen, frozen=True):
    country: Annotated[
        str, Meta(description="ISO 3166-1 alpha-2", extra_json_schema={"pattern": COUNTRY})
    ]
    postcode: Postcode

    def __post_init__(self) -> None:
        value = self.country
        if not (len(value) == 2 and value.isascii() and value.isalpha() and value.isupper()):
            raise ContractError("country", f"String should match pattern '{COUNTRY}'")


class OrderCreated(_Event, frozen=True, tag="order.created"):
    merchant_id: Id
    items: Annotated[list[Item], Meta(min_length=1, max_length=500)]
    ship_to: ShipTo


class OrderShipped(_Event, frozen=True, tag="order.shipped"):
    """The merchant filled in tracking (waybill and carrier)."""

    waybill_no: Id
    carrier: Id


class OrderCollected(_Event, frozen=True, tag="order.collected"):
    """Collection scanned at the overseas warehouse (2.1.1)."""

    waybill_no: Id
    carrier: Id


class StockoutDeclared(_Event, frozen=True, tag="order.stockout_declared"):
    pass


class ConsumerContacted(_Event, frozen=True, tag="order.consumer_contacted"):
    """The merchant contacted the consumer about a stock-out (3.2.2)."""

    outcome: Literal["restock", "consumer_agreed_cancel"]
    new_ship_by: (
        Annotated[
            datetime,
            Meta(tz=True, description="With outcome 'restock': the arrival time agreed (3.2.2)."),
        ]
        | None
    ) = None

    def _check(self) -> None:
        super()._check()
        if self.outcome == "restock" and self.new_ship_by is None:
            raise ContractError("new_ship_by", "required when outcome is 'restock'")
        if self.outcome != "restock" and self.new_ship_by is not None:
            raise ContractError("new_ship_by", "only allowed when outcome is 'restock'")
        if self.new_ship_by is not None and self.new_ship_by <= self.occurred_at:
            raise ContractError("new_ship_by", "must be after occurred_at")


class CancellationRequested(_Event, frozen=True, tag="cancellation.requested"):
    cancellation_id: Id


class CancellationReviewed(_Event, frozen=True, tag="cancellation.reviewed"):
    cancellation_id: Id
    decision: Literal["approved", "rejected"]


class CustomsClearanceFailed(_Event, frozen=True, tag="customs.clearance_failed"):
    """Customs clearance failed; the merchant must help refund within the limit (2.3.1)."""


class RefundCompleted(_Event, frozen=True, tag="refund.completed"):
    pass


class AnnouncementPublished(_Event, frozen=True, tag="announcement.published", kw_only=True):
    """A platform announcement of a special period (2.1.3): orders created in the window ship
    within `ship_within_hours` instead of the spot limit. It concerns every order, so its
    `order_id` is "*" (or left out)."""

    order_id: Literal["*"] = "*"
    announcement_id: Id
    applies_from: UtcTime
    applies_until: UtcTime
    ship_within_hours: Hours

    def _check(self) -> None:
        super()._check()
        if self.applies_until <= self.applies_from:
            raise ContractError("applies_until", "must be after applies_from")


class LogisticsTracked(_Event, frozen=True, tag="logistics.tracked"):
    """A logistics trace update from the carrier (3.3): where the parcel is going and how."""

    waybill_no: Id
    carrier: Id
    status: Literal["collected", "in_transit", "out_for_delivery", "delivered", "exception"]
    destination_postcode: Postcode


class RefusedShipment(_Event, frozen=True, tag="merchant.refused_shipment"):
    """The merchant refuses to ship, or asks for more money to ship (2.1.4 / 3.2.1(2))."""

    reason: Literal["refused", "price_increase"]


class ComplaintUpheld(_Event, frozen=True, tag="complaint.upheld"):
    """A consumer complaint the platform upheld, with the platform's judgement (3.1 / 2.4)."""

    category: Literal["shortage", "wrong_item", "packaging"]
    severity: Literal["slight", "serious"]


class _CaseEvent(_Event, frozen=True, kw_only=True):
    """An event about a case that is not an order (an IPR complaint, a customer-service
    inquiry). The case is its own stream: `order_id` is "<prefix>:<case id>" (filled in when
    left out), so the store keys, orders and replays it like an order."""

    stream_prefix: ClassVar[str]
    case_field: ClassVar[str]
    order_id: Id = ""  # never decoded as "" (min_length): "" means left out

    def _check(self) -> None:
        self._with_stream_key()

    def _with_stream_key(self) -> None:
        """A case event may leave out `order_id`: its case id (already valid) gives it."""
        expected = f"{self.stream_prefix}:{getattr(self, self.case_field)}"
        if not self.order_id:
            msgspec.structs.force_setattr(self, "order_id", expected)
        elif self.order_id != expected:
            raise ContractError("order_id", f"must be {expected!r} (or left out)")


class _IprEvent(_CaseEvent, frozen=True):
    stream_prefix = "ipr"
    case_field = "complaint_id"
    complaint_id: Annotated[str, Meta(min_length=1, max_length=124, extra_json_schema=_ID)]


class IprComplaintFiled(_IprEvent, frozen=True, tag="ipr.complaint_filed"):
    """The platform received an IPR complaint against a merchant (the respondent): the 2
    working days to respond and the 10 working days of the platform's review start."""

    merchant_id: Id


class IprResponseFiled(_IprEvent, frozen=True, tag="ipr.response_filed"):
    """The respondent filed its response, with all supporting materials."""


class IprComplaintDecided(_IprEvent, frozen=True, tag="ipr.complaint_decided"):
    """The platform examined the complaint (or the complainant withdrew it)."""

    decision: Literal["upheld", "rejected", "withdrawn"]


class _InquiryEvent(_CaseEvent, frozen=True):
    stream_prefix = "cs"
    case_field = "inquiry_id"
    inquiry_id: Annotated[str, Meta(min_length=1, max_length=125, extra_json_schema=_ID)]


class InquiryReceived(_InquiryEvent, frozen=True, tag="cs.inquiry_received"):
    """A consumer's email reached customer service: 24 h to answer, in its working hours."""


class InquiryAnswered(_InquiryEvent, frozen=True, tag="cs.inquiry_answered"):
    pass


class OrderDelivered(_Event, frozen=True, tag="order.delivered"):
    """The consumer received the parcel: the 30-day returns window starts."""


class ReturnRequested(_Event, frozen=True, tag="return.requested"):
    return_id: Id


class ClosureDeclared(_Event, frozen=True, tag="calendar.closure_declared", kw_only=True):
    """A platform-declared closure (a typhoon signal, an office closure): working-time clocks
    on the named calendars (all when none are named) pause for it; open ones are re-judged.
    It concerns every case, so its `order_id` is "*" (or left out)."""

    order_id: Literal["*"] = "*"
    closure_id: Id
    starts_at: UtcTime
    ends_at: UtcTime
    calendars: Annotated[list[Id], Meta(max_length=50)] = []
    reason: Annotated[str, Meta(max_length=256)] = ""

    def _check(self) -> None:
        super()._check()
        if self.ends_at <= self.starts_at:
            raise ContractError("ends_at", "must be after starts_at")
        if self.ends_at - self.starts_at > MAX_CLOSURE:
            raise ContractError("ends_at", f"a closure lasts at most {MAX_CLOSURE.days} days")


Event = (
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
    | ClosureDeclared
)
EVENT_MODELS: tuple[type[_Event], ...] = get_args(Event)
EVENT_TYPES: tuple[str, ...] = tuple(str(model.__struct_config__.tag) for model in EVENT_MODELS)
_BY_TYPE: dict[str, type[_Event]] = dict(zip(EVENT_TYPES, EVENT_MODELS, strict=True))
_DECODER = msgspec.json.Decoder(Event)


def parse_event(raw: bytes | str) -> Event:
    """Parse one JSON message into an event, or raise ContractError naming the field."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", errors="surrogatepass")
    if len(raw) > MAX_EVENT_BYTES:
        raise ContractError("(message)", f"larger than {MAX_EVENT_BYTES} bytes")
    if _SUB_MICROSECOND.search(raw) is not None:
        raw = _truncated(raw)
    try:
        return _DECODER.decode(raw)
    except msgspec.DecodeError as exc:  # a ValidationError too
        raise _refusal(raw, exc) from None


_SUB_MICROSECOND = re.compile(rb":\d\d\.\d{7}")
"""A timestamp with more than 6 decimals (RFC 3339 allows any number; Go's RFC3339Nano writes 9)."""


def _truncated(raw: bytes) -> bytes:
    """The message with its timestamps cut to the microsecond. msgspec rounds the decimals it
    cannot keep; the contract has always cut them, and an event stored with the cut time must
    keep its digest when it is delivered again."""
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw  # refused as it is
    kind = document.get("type") if isinstance(document, dict) else None
    model = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if model is None:
        return raw
    for name in _SHAPES[model].times:
        if isinstance(document.get(name), str):
            document[name] = re.sub(r"(:\d\d\.\d{6})\d+", r"\1", document[name], count=1)
    return orjson.dumps(document)


def parse_document(document: Any) -> Event:
    """Validate an already-decoded JSON document against the contract."""
    if not isinstance(document, dict):
        raise ContractError("(message)", "must be a JSON object")
    return parse_event(orjson.dumps(document))


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


def _refusal(raw: bytes, exc: msgspec.DecodeError) -> ContractError:
    """The refusal for a message the decoder stopped at (the cold path: decodes it again to say
    what is wrong with the message as a whole before naming a field)."""
    if isinstance(exc.__cause__, ContractError):  # a rule of __post_init__, at its path
        path = _path(str(exc).rpartition(" - at `")[2])
        return ContractError(".".join([*path, exc.__cause__.field]), exc.__cause__.reason)
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as bad:  # orjson's positions: line and column
        return ContractError("(message)", json_problem(raw, bad))
    if not isinstance(exc, msgspec.ValidationError):
        return ContractError("(message)", f"not valid JSON: {exc}")
    if not isinstance(document, dict):
        return ContractError("(message)", "must be a JSON object")
    kind = document.get("type")
    if kind is None:
        return ContractError("type", "missing")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        return ContractError("type", f"unknown event type {kind!r}")
    return _field_error(_BY_TYPE[kind], str(exc))


def _field_error(model: type[_Event], message: str) -> ContractError:
    """msgspec's 'Expected `int` >= 1 - at `$.items[0].quantity`' as the contract words it."""
    text, _, where = message.rpartition(" - at `")
    if not text or not where.startswith("$"):
        text, where = message, "$`"
    path = _path(where)
    field = re.fullmatch(r"Object (missing required|contains unknown) field `(.*)`", text)
    if field:
        path.append(field[2])
        reason = "Field required" if field[1] == "missing required" else _EXTRA
    else:
        reason = _reason(text, _type_at(model, path))
    return ContractError(".".join(path) or "(message)", reason)


def _path(where: str) -> list[str]:
    """msgspec's "$.items[0].quantity`" as ["items", "0", "quantity"] (nothing but "$": [])."""
    if not where.startswith("$"):
        return []
    return [name or index for name, index in re.findall(r"\.([^.\[`]+)|\[(\d+)\]", where)]


_EXTRA = "Extra inputs are not permitted"
_KINDS = {
    "int": "a valid integer",
    "float": "a valid number",
    "str": "a valid string",
    "bool": "a valid boolean",
    "datetime": "a valid datetime",
    "array": "a valid array",
    "object": "an object",
}
_BOUNDS = {">=": "greater than or equal to", ">": "greater than", "<=": "less than or equal to"}
_BOUNDS["<"] = "less than"


def _reason(text: str, kind: Any) -> str:
    if get_origin(_bare(kind)) is Literal:
        return f"Input should be {_choices(get_args(_bare(kind)))}"
    if "matching regex" in text and (pattern := _pattern(kind)):
        return f"String should match pattern '{pattern}'"
    if text == "Expected `datetime` with a timezone component":
        return "Input should have timezone info"
    if text == "Invalid RFC3339 encoded datetime":
        return "Input should be a valid datetime (RFC 3339, with an offset)"
    if match := re.fullmatch(r"Expected `(str|array)` of length ([<>]=) (\d+)", text):
        what, unit = ("String", "character") if match[1] == "str" else ("List", "item")
        most = "at least" if match[2] == ">=" else "at most"
        return f"{what} should have {most} {match[3]} {unit}{'' if match[3] == '1' else 's'}"
    if match := re.fullmatch(r"Expected `(?:int|float)` ([<>]=?) (\S+)", text):
        return f"Input should be {_BOUNDS[match[1]]} {float(match[2]):g}"
    if match := re.match(r"Expected `(\w+)", text):
        return f"Input should be {_KINDS.get(match[1], match[1])}"
    return text


def _choices(values: tuple[Any, ...]) -> str:
    """pydantic's way: 'a', 'b' or 'c'."""
    shown = [repr(value) for value in values]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


_UNIONS = (Union, UnionType)


def _type_at(model: type[_Event], path: list[str]) -> Any:
    """The annotation the contract has at `path` (None where the path leaves the contract)."""
    kind: Any = model
    for part in path:
        kind = _bare(kind)
        if isinstance(kind, type) and issubclass(kind, Struct):
            kind = {field.name: field.type for field in msgspec.structs.fields(kind)}.get(part)
        elif get_origin(kind) is list:
            kind = get_args(kind)[0]
        else:
            return None
    return kind


def _bare(kind: Any) -> Any:
    """The type inside `Annotated[...]`, and inside `... | None`."""
    if get_origin(kind) is Annotated:
        return _bare(get_args(kind)[0])
    if get_origin(kind) in _UNIONS and type(None) in get_args(kind):
        return _bare(next(t for t in get_args(kind) if t is not type(None)))
    return kind


def _pattern(kind: Any) -> str | None:
    if get_origin(kind) in _UNIONS:
        return next(filter(None, map(_pattern, get_args(kind))), None)
    metas = get_args(kind)[1:] if get_origin(kind) is Annotated else ()
    schemas = [getattr(meta, "extra_json_schema", None) or {} for meta in metas]
    return next((schema["pattern"] for schema in schemas if "pattern" in schema), None)


def canonical_body(event: Event) -> bytes:
    """The event as canonical JSON: the same event always gives the same bytes (orjson writes
    them, as it always has: msgspec's own encoder spells some floats differently)."""
    return orjson.dumps(msgspec.to_builtins(event), option=orjson.OPT_SORT_KEYS)


def body_digest(event: Event) -> str:
    """Fingerprint used to tell a harmless duplicate from an `event_id` reused for another body."""
    return hashlib.sha256(canonical_body(event)).hexdigest()


def contract_schema() -> dict[str, Any]:
    """The JSON Schema of the contract, as published by `slatimer schema`."""
    schema = msgspec.json.schema(Event)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://slatimer.example/schema/event-v{CONTRACT_VERSION}.json"
    schema["title"] = f"slatimer event contract v{CONTRACT_VERSION}"
    return schema


class _Shape(NamedTuple):
    """The fields `_Event.__post_init__` checks, per event type."""

    ids: Callable[[_Event], Iterable[str]]
    id_names: tuple[str, ...]
    id_lists: tuple[str, ...]
    times: tuple[str, ...]


def _shape(model: type[_Event]) -> _Shape:
    fields = msgspec.structs.fields(model)
    ids = [field.name for field in fields if _pattern(field.type) == ID_PATTERN]
    lists = [field.name for field in fields if _pattern(_item(field.type)) == ID_PATTERN]
    times = tuple(field.name for field in fields if _bare(field.type) is datetime)
    lists = [name for name in lists if name not in ids]
    # one id: attrgetter gives the string, which "".join also takes
    return _Shape(attrgetter(*ids), tuple(ids), tuple(lists), times)


def _item(kind: Any) -> Any:
    """A list's item type (`list[Id]`), the type itself otherwise."""
    bare = _bare(kind)
    return get_args(bare)[0] if get_origin(bare) is list else kind


_SHAPES = {model: _shape(model) for model in EVENT_MODELS}
