"""Order state: the facts slatimer knows about one order, folded from its events.

Folding is commutative and idempotent: each fact keeps the earliest occurrence by event time
(ties broken by `event_id`), so events may arrive late, twice or out of order and the state is
the same. Deadlines are then judged from these facts, never from arrival order.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from models import events as ev


class Fact(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    event_id: str

    def sort_key(self) -> tuple[datetime, str]:
        return (self.at, self.event_id)


class Creation(Fact):
    merchant_id: str
    special_hours: float | None
    """The largest `ship_within_hours` among special items (2.1.2), if any."""
    has_spot_items: bool
    country: str
    postcode: str


class Tracking(Fact):
    waybill_no: str
    carrier: str


class Contact(Fact):
    outcome: Literal["restock", "consumer_agreed_cancel"]
    new_ship_by: datetime | None


class Mark(Fact):
    """A fact that only has a time: a stock-out declaration, a customs failure, a refund."""


class Request(Fact):
    cancellation_id: str


class Review(Fact):
    cancellation_id: str
    decision: Literal["approved", "rejected"]


class Trace(Fact):
    waybill_no: str
    carrier: str
    status: str
    destination_postcode: str


class Refusal(Fact):
    reason: Literal["refused", "price_increase"]


class Complaint(Fact):
    category: Literal["shortage", "wrong_item", "packaging"]
    severity: Literal["slight", "serious"]


class IprFiling(Fact):
    complaint_id: str
    merchant_id: str


class IprDecision(Fact):
    decision: Literal["upheld", "rejected", "withdrawn"]


class Inquiry(Fact):
    inquiry_id: str


class ReturnRequest(Fact):
    return_id: str


F = TypeVar("F", bound=Fact)


def earliest(current: F | None, new: F) -> F:
    """The earlier of two facts by event time; the deterministic merge of every fact."""
    if current is None or new.sort_key() < current.sort_key():
        return new
    return current


def _merged(facts: tuple[F, ...], new: F) -> tuple[F, ...]:
    if not facts:
        return (new,)  # the usual case: the first contact, request, trace... of the order
    if any(fact.event_id == new.event_id for fact in facts):
        return facts
    if facts[-1].sort_key() < new.sort_key():
        return (*facts, new)  # in time order, as most events come
    return tuple(sorted((*facts, new), key=lambda fact: fact.sort_key()))


class OrderState(BaseModel):
    model_config = ConfigDict(frozen=True)

    order_id: str
    created: Creation | None = None
    shipped: Tracking | None = None
    collected: Tracking | None = None
    stockout_declared: Mark | None = None
    contacts: tuple[Contact, ...] = ()
    requests: tuple[Request, ...] = ()
    reviews: tuple[Review, ...] = ()
    customs_failed: Mark | None = None
    refund_completed: Mark | None = None
    traces: tuple[Trace, ...] = ()
    refused: Refusal | None = None
    complaints: tuple[Complaint, ...] = ()
    delivered: Mark | None = None
    returns: tuple[ReturnRequest, ...] = ()
    # an IPR complaint's stream ("ipr:<complaint id>")
    ipr_filed: IprFiling | None = None
    ipr_response: Mark | None = None
    ipr_decided: IprDecision | None = None
    # a customer-service inquiry's stream ("cs:<inquiry id>")
    inquiry: Inquiry | None = None
    inquiry_answered: Mark | None = None

    @property
    def merchant_id(self) -> str | None:
        """The merchant answerable for the stream: the order's, or an IPR complaint's
        respondent; none for a customer-service inquiry (the platform answers those)."""
        if self.created:
            return self.created.merchant_id
        return self.ipr_filed.merchant_id if self.ipr_filed else None

    @property
    def opened_at(self) -> datetime | None:
        """When the stream began (order created, complaint filed, inquiry received): the rules
        in force then judge it (4.1)."""
        start = self.created or self.ipr_filed or self.inquiry
        return start.at if start else None

    def review_of(self, cancellation_id: str) -> Review | None:
        """The first review of a cancellation request; later ones do not change the decision."""
        return next((r for r in self.reviews if r.cancellation_id == cancellation_id), None)

    def first_request(self, cancellation_id: str) -> Request | None:
        return next((r for r in self.requests if r.cancellation_id == cancellation_id), None)

    def cancellation_ids(self) -> list[str]:
        """Every cancellation seen, requested or only reviewed (events may arrive out of order)."""
        if not self.requests and not self.reviews:
            return []  # most orders: asked twice per reconcile
        requested = {request.cancellation_id for request in self.requests}
        return sorted(requested | {review.cancellation_id for review in self.reviews})


def apply(state: OrderState, event: ev.Event) -> OrderState:
    """Fold one event into the state (pure; returns a new state)."""
    fold = _FOLDS.get(type(event))
    if fold is None:  # an announcement or a closure concerns no single order
        raise TypeError(f"no fold for {type(event).__name__}")
    return _updated(state, fold(event, state))


def _updated(state: OrderState, changes: dict[str, Any]) -> OrderState:
    """`state.model_copy(update=changes)` without its generic copying (`copy.copy` of each
    attribute, private ones included: OrderState has none), a third of the fold. The
    fields are already validated facts; `state` itself is left as it was."""
    new = OrderState.__new__(OrderState)
    fields_set = state.__pydantic_fields_set__ | changes.keys()
    object.__setattr__(new, "__dict__", {**state.__dict__, **changes})
    object.__setattr__(new, "__pydantic_fields_set__", fields_set)
    object.__setattr__(new, "__pydantic_extra__", None)
    object.__setattr__(new, "__pydantic_private__", None)
    return new


def _stamp(event: ev.Event) -> dict[str, Any]:
    return {"at": event.occurred_at, "event_id": event.event_id}


E = TypeVar("E", bound=ev.Event)
Fold = Callable[[Any, OrderState], dict[str, Any]]
_FOLDS: dict[type, Fold] = {}
"""Each event type's fold, by exact type: one dictionary look-up per event (a `singledispatch`
walks its cache of the type's bases)."""


def _folds(kind: type[E]) -> Callable[[Callable[[E, OrderState], dict[str, Any]]], Fold]:
    """Register the facts an event of `kind` adds to its order."""

    def register(fold: Callable[[E, OrderState], dict[str, Any]]) -> Fold:
        _FOLDS[kind] = fold
        return fold

    return register


@_folds(ev.OrderCreated)
def _(event: ev.OrderCreated, state: OrderState) -> dict[str, Any]:
    special = [i.ship_within_hours for i in event.items if i.ship_within_hours is not None]
    creation = Creation(
        **_stamp(event),
        merchant_id=event.merchant_id,
        special_hours=max(special) if special else None,
        has_spot_items=len(special) < len(event.items),
        country=event.ship_to.country,
        postcode=event.ship_to.postcode,
    )
    return {"created": earliest(state.created, creation)}


@_folds(ev.OrderShipped)
def _(event: ev.OrderShipped, state: OrderState) -> dict[str, Any]:
    tracking = Tracking(**_stamp(event), waybill_no=event.waybill_no, carrier=event.carrier)
    return {"shipped": earliest(state.shipped, tracking)}


@_folds(ev.OrderCollected)
def _(event: ev.OrderCollected, state: OrderState) -> dict[str, Any]:
    tracking = Tracking(**_stamp(event), waybill_no=event.waybill_no, carrier=event.carrier)
    return {"collected": earliest(state.collected, tracking)}


@_folds(ev.StockoutDeclared)
def _(event: ev.StockoutDeclared, state: OrderState) -> dict[str, Any]:
    return {"stockout_declared": earliest(state.stockout_declared, Mark(**_stamp(event)))}


@_folds(ev.ConsumerContacted)
def _(event: ev.ConsumerContacted, state: OrderState) -> dict[str, Any]:
    contact = Contact(**_stamp(event), outcome=event.outcome, new_ship_by=event.new_ship_by)
    return {"contacts": _merged(state.contacts, contact)}


@_folds(ev.CancellationRequested)
def _(event: ev.CancellationRequested, state: OrderState) -> dict[str, Any]:
    request = Request(**_stamp(event), cancellation_id=event.cancellation_id)
    return {"requests": _merged(state.requests, request)}


@_folds(ev.CancellationReviewed)
def _(event: ev.CancellationReviewed, state: OrderState) -> dict[str, Any]:
    review = Review(**_stamp(event), cancellation_id=event.cancellation_id, decision=event.decision)
    return {"reviews": _merged(state.reviews, review)}


@_folds(ev.CustomsClearanceFailed)
def _(event: ev.CustomsClearanceFailed, state: OrderState) -> dict[str, Any]:
    return {"customs_failed": earliest(state.customs_failed, Mark(**_stamp(event)))}


@_folds(ev.RefundCompleted)
def _(event: ev.RefundCompleted, state: OrderState) -> dict[str, Any]:
    return {"refund_completed": earliest(state.refund_completed, Mark(**_stamp(event)))}


@_folds(ev.LogisticsTracked)
def _(event: ev.LogisticsTracked, state: OrderState) -> dict[str, Any]:
    trace = Trace(
        **_stamp(event),
        waybill_no=event.waybill_no,
        carrier=event.carrier,
        status=event.status,
        destination_postcode=event.destination_postcode,
    )
    return {"traces": _merged(state.traces, trace)}


@_folds(ev.RefusedShipment)
def _(event: ev.RefusedShipment, state: OrderState) -> dict[str, Any]:
    return {"refused": earliest(state.refused, Refusal(**_stamp(event), reason=event.reason))}


@_folds(ev.ComplaintUpheld)
def _(event: ev.ComplaintUpheld, state: OrderState) -> dict[str, Any]:
    complaint = Complaint(**_stamp(event), category=event.category, severity=event.severity)
    return {"complaints": _merged(state.complaints, complaint)}


@_folds(ev.OrderDelivered)
def _(event: ev.OrderDelivered, state: OrderState) -> dict[str, Any]:
    return {"delivered": earliest(state.delivered, Mark(**_stamp(event)))}


@_folds(ev.ReturnRequested)
def _(event: ev.ReturnRequested, state: OrderState) -> dict[str, Any]:
    request = ReturnRequest(**_stamp(event), return_id=event.return_id)
    return {"returns": _merged(state.returns, request)}


@_folds(ev.IprComplaintFiled)
def _(event: ev.IprComplaintFiled, state: OrderState) -> dict[str, Any]:
    filing = IprFiling(
        **_stamp(event), complaint_id=event.complaint_id, merchant_id=event.merchant_id
    )
    return {"ipr_filed": earliest(state.ipr_filed, filing)}


@_folds(ev.IprResponseFiled)
def _(event: ev.IprResponseFiled, state: OrderState) -> dict[str, Any]:
    return {"ipr_response": earliest(state.ipr_response, Mark(**_stamp(event)))}


@_folds(ev.IprComplaintDecided)
def _(event: ev.IprComplaintDecided, state: OrderState) -> dict[str, Any]:
    decision = IprDecision(**_stamp(event), decision=event.decision)
    return {"ipr_decided": earliest(state.ipr_decided, decision)}


@_folds(ev.InquiryReceived)
def _(event: ev.InquiryReceived, state: OrderState) -> dict[str, Any]:
    inquiry = Inquiry(**_stamp(event), inquiry_id=event.inquiry_id)
    return {"inquiry": earliest(state.inquiry, inquiry)}


@_folds(ev.InquiryAnswered)
def _(event: ev.InquiryAnswered, state: OrderState) -> dict[str, Any]:
    return {"inquiry_answered": earliest(state.inquiry_answered, Mark(**_stamp(event)))}
