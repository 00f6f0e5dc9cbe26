"""The SLA rules: which obligations an order carries, when each is due, and whether it was met.

`obligations(order, policy)` is the whole rulebook for one order, as a pure function of the facts
folded into its state. Whether an obligation is breached depends only on event times, so the same
facts always give the same verdict, whatever order the events arrived in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Literal, Protocol

from models.calendars import Interval, Timed
from models.order import Creation, Fact, OrderState
from models.policy import Policy

Kind = Literal["violation", "escalation", "warning"]


@dataclass(frozen=True)
class Rule:
    id: str
    kind: Kind
    category: str | None
    clause: str


COLLECTION_OVERDUE = Rule("collection_overdue", "violation", "out_of_stock", "2.1.1 / 3.2.1(1)")
STOCKOUT_CONTACT_OVERDUE = Rule("stockout_contact_overdue", "violation", "out_of_stock", "3.2.2")
CANCELLATION_REVIEW_OVERDUE = Rule("cancellation_review_overdue", "escalation", None, "2.2.3")
CANCELLATION_REJECTED_UNSHIPPED = Rule(
    "cancellation_rejected_unshipped", "escalation", None, "2.2.3"
)
CUSTOMS_REFUND_OVERDUE = Rule("customs_refund_overdue", "escalation", None, "2.3.1")
WRONG_CARRIER = Rule("wrong_carrier", "violation", "wrong_carrier", "2.1 / Chapter III")
FALSE_DELIVERY = Rule("false_delivery", "violation", "false_delivery", "3.3")
REFUSAL_TO_SHIP = Rule("refusal_to_ship", "violation", "refusal", "2.1.4 / 3.2.1(2)")
SHORTAGE = Rule("shortage", "violation", "shortage", "3.1")
PACKAGING = Rule("packaging", "warning", None, "2.4")
# working-time clocks of the contact and IPR page (it numbers no clauses)
IPR_RESPONSE_OVERDUE = Rule("ipr_response_overdue", "escalation", None, "IPR: response period")
IPR_REVIEW_OVERDUE = Rule("ipr_review_overdue", "escalation", None, "IPR: complaint review")
CS_REPLY_OVERDUE = Rule("cs_reply_overdue", "escalation", None, "CS: email reply")
RETURN_WINDOW_CLOSED = Rule("return_window_closed", "escalation", None, "Returns: 30 days")
RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        COLLECTION_OVERDUE,
        STOCKOUT_CONTACT_OVERDUE,
        CANCELLATION_REVIEW_OVERDUE,
        CANCELLATION_REJECTED_UNSHIPPED,
        CUSTOMS_REFUND_OVERDUE,
        WRONG_CARRIER,
        FALSE_DELIVERY,
        REFUSAL_TO_SHIP,
        SHORTAGE,
        PACKAGING,
        IPR_RESPONSE_OVERDUE,
        IPR_REVIEW_OVERDUE,
        CS_REPLY_OVERDUE,
        RETURN_WINDOW_CLOSED,
    )
}
VIOLATION_RULES = frozenset(rule.id for rule in RULES.values() if rule.kind == "violation")
"""Rules whose breach is graded against the merchant's record (Chapter III): their clocks are
the ones a merchant's record must see in due order."""


@dataclass(frozen=True)
class Obligation:
    """One clock on one order: due at `due_at`, met (or ended) at `met_at` if it was."""

    rule: Rule
    subject: str
    """What the clock is about within the order: a cancellation id, or '' for the order itself."""
    due_at: datetime
    met_at: datetime | None
    met_by: str | None
    clause: str
    since: datetime
    """When the clock started (the order, the request, the declaration, the failure)."""
    evidence: str | None = None
    """What makes it a breach, for rules with several cases (3.3's five)."""
    severity: Literal["slight", "serious"] | None = None
    """The platform's own judgement, where it gives one (an upheld complaint, 3.1)."""
    calendar: str | None = None
    """The calendar in force for a working-time clock (kept with its deadline row)."""
    paused: tuple[Interval, ...] = ()
    """Stretches a declared closure paused the clock for (the deadline's timeline)."""

    @property
    def breached(self) -> bool:
        return self.met_at is None or self.met_at > self.due_at

    def is_open_at(self, now: datetime) -> bool:
        """Still running: neither met nor due yet, so a timer must wake us at `due_at`."""
        return self.met_at is None and self.due_at > now

    @property
    def slot(self) -> tuple[str, str]:
        return (self.rule.id, self.subject)


def obligations(order: OrderState, policy: Policy) -> list[Obligation]:
    """Every clock the stream carries under `policy`: an IPR complaint's or an inquiry's, or an
    order's — none of an order's before its `order.created` is known."""
    found: list[Obligation | None] = [
        _ipr_response(order, policy),
        _ipr_review(order, policy),
        _inquiry_reply(order, policy),
    ]
    created = order.created
    if created is None:
        return [obligation for obligation in found if obligation is not None]
    found += [
        _collection(order, created, policy),
        _stockout_contact(order, created, policy),
        _customs_refund(order, policy),
        *_cancellation_reviews(order, policy),
        *_rejections_before_shipping(order),
        _wrong_carrier(order, policy),
        _refusal(order),
        *false_delivery(order, created, policy),
        *_complaints(order),
        *_late_returns(order, policy),
    ]
    return [obligation for obligation in found if obligation is not None]


def collection_limit(created: Creation, policy: Policy) -> timedelta:
    """2.1.1 / 2.1.2 / 2.1.3: spot goods 120 h, or an announced special period's limit;
    special goods by their detail page; the longest applies."""
    limits = []
    if created.has_spot_items:
        limits.append(policy.spot_limit_for(created.at))
    if created.special_hours is not None:
        limits.append(policy.special_goods_limit(created.special_hours))
    return max(limits)


def collection_due(order: OrderState, created: Creation, policy: Policy) -> datetime:
    """The collection deadline, moved by each restock agreement made before it passed (3.2.2)."""
    due = created.at + collection_limit(created, policy)
    for contact in order.contacts:
        if contact.outcome == "restock" and contact.new_ship_by and contact.at <= due:
            due = contact.new_ship_by
    return due


def _first(*candidates: tuple[datetime, str] | None) -> tuple[datetime, str] | None:
    present = [c for c in candidates if c is not None]
    return min(present) if present else None


def _stamp(fact: Fact | None) -> tuple[datetime, str] | None:
    return fact.sort_key() if fact is not None else None


def _approved_cancellation(order: OrderState) -> tuple[datetime, str] | None:
    if not order.reviews:
        return None  # most orders: asked twice per reconcile
    approved = [(r.at, r.event_id) for r in order.reviews if r.decision == "approved"]
    return min(approved) if approved else None


def _agreed_cancel(order: OrderState) -> tuple[datetime, str] | None:
    if not order.contacts:
        return None
    agreed = [(c.at, c.event_id) for c in order.contacts if c.outcome == "consumer_agreed_cancel"]
    return min(agreed) if agreed else None


def _obligation(
    rule: Rule,
    since: datetime,
    due_at: datetime,
    met: tuple[datetime, str] | None,
    subject: str = "",
    clause: str | None = None,
    evidence: str | None = None,
) -> Obligation:
    return Obligation(
        rule=rule,
        subject=subject,
        due_at=due_at,
        met_at=met[0] if met else None,
        met_by=met[1] if met else None,
        clause=clause or rule.clause,
        since=since,
        evidence=evidence,
    )


def _at_once(
    rule: Rule, fact: Fact, clause: str | None = None, evidence: str = "", subject: str = ""
) -> Obligation:
    """A breach the event itself is: due the moment it happened, never met."""
    return _obligation(
        rule, fact.at, fact.at, None, subject=subject, clause=clause, evidence=evidence or None
    )


def _collection(order: OrderState, created: Creation, policy: Policy) -> Obligation:
    """2.1.1 / 3.2.1(1): collected, or the order cancelled, by the deadline."""
    ended = _first(
        _stamp(order.collected),
        _approved_cancellation(order),
        _agreed_cancel(order),
        _stamp(order.refused),  # 2.1.4: a refusal is its own violation, not also 2.1.1
    )
    return _obligation(
        COLLECTION_OVERDUE, created.at, collection_due(order, created, policy), ended
    )


def _stockout_contact(order: OrderState, created: Creation, policy: Policy) -> Obligation | None:
    """3.2.2: after a stock-out, contact the consumer within 48 h of the order.

    Collection or an approved cancellation by then also ends it (nothing is left to tell the
    consumer). A stock-out declared after the 48 h without contact is a breach at declaration.
    """
    declared = order.stockout_declared
    if declared is None:
        return None
    window_end = created.at + policy.limits.stockout_contact
    first_contact = _stamp(order.contacts[0]) if order.contacts else None
    ended = _first(first_contact, _stamp(order.collected), _approved_cancellation(order))
    in_time = ended if ended is not None and ended[0] <= window_end else None
    due = max(window_end, declared.at)
    return _obligation(STOCKOUT_CONTACT_OVERDUE, declared.at, due, in_time)


def _cancellation_reviews(order: OrderState, policy: Policy) -> Iterable[Obligation]:
    """2.2.3 (not shipped) / 2.3.2 (shipped, not collected): review within 24 h of the request."""
    for cancellation_id in order.cancellation_ids():
        request = order.first_request(cancellation_id)
        if request is None:
            continue  # only the review is known so far
        if order.collected and order.collected.at <= request.at:
            continue  # a request on a collected order starts no clock
        shipped = order.shipped is not None and order.shipped.at <= request.at
        yield _obligation(
            CANCELLATION_REVIEW_OVERDUE,
            request.at,
            request.at + policy.limits.cancellation_review,
            _stamp(order.review_of(cancellation_id)),
            subject=cancellation_id,
            clause="2.3.2" if shipped else "2.2.3",
        )


def _rejections_before_shipping(order: OrderState) -> Iterable[Obligation]:
    """2.2.3 requires approval of a cancellation on an unshipped order: a rejection escalates."""
    for cancellation_id in order.cancellation_ids():
        review = order.review_of(cancellation_id)
        if review is None or review.decision != "rejected":
            continue
        if order.shipped is not None and order.shipped.at <= review.at:
            continue
        yield _obligation(
            CANCELLATION_REJECTED_UNSHIPPED, review.at, review.at, None, subject=cancellation_id
        )


def _customs_refund(order: OrderState, policy: Policy) -> Obligation | None:
    """2.3.1: after a failed customs clearance, the refund is completed within 24 h."""
    if order.customs_failed is None:
        return None
    failed = order.customs_failed.at
    due = failed + policy.limits.customs_refund
    return _obligation(CUSTOMS_REFUND_OVERDUE, failed, due, _stamp(order.refund_completed))


def _wrong_carrier(order: OrderState, policy: Policy) -> Obligation | None:
    """2.1: JD Logistics only. The first shipping or collection record on another carrier."""
    records = [r for r in (order.shipped, order.collected) if r is not None]
    wrong = [r for r in records if r.carrier not in policy.allowed_carriers]
    if not wrong:
        return None
    first = min(wrong, key=lambda record: record.sort_key())
    return _at_once(WRONG_CARRIER, first, evidence=f"shipped with carrier {first.carrier}")


def _refusal(order: OrderState) -> Obligation | None:
    """2.1.4 / 3.2.1(2): refusing to ship, or asking more money to ship, is out of stock."""
    if order.refused is None:
        return None
    return _at_once(REFUSAL_TO_SHIP, order.refused, evidence=f"reason: {order.refused.reason}")


def false_delivery(order: OrderState, created: Creation, policy: Policy) -> list[Obligation]:
    """3.3's five cases; at most one false-delivery violation per order stands (the earliest)."""
    silence = [_no_trace_after_shipping(order, policy), _trace_went_quiet(order, policy)]
    cases = [
        *(silence if policy.trace_checks else []),
        _invalid_waybill(order, policy),
        _trace_to_another_address(order, created),
        _trace_by_another_carrier(order),
    ]
    # each case is its own clock (subject "3.3(n)", its clause); the category cap keeps one
    # violation
    return [case for case in cases if case is not None]


def _no_trace_after_shipping(order: OrderState, policy: Policy) -> Obligation | None:
    """3.3(1): a waybill filled in, but no logistics trace for it within 24 h."""
    shipped = order.shipped
    if shipped is None:
        return None
    traces = [t for t in order.traces if t.waybill_no == shipped.waybill_no]
    first = _stamp(min(traces, key=lambda t: t.sort_key())) if traces else None
    due = shipped.at + policy.limits.trace_after_shipping
    evidence = f"no trace for waybill {shipped.waybill_no} within the limit"
    return _obligation(FALSE_DELIVERY, shipped.at, due, first, "3.3(1)", "3.3(1)", evidence)


def _trace_went_quiet(order: OrderState, policy: Policy) -> Obligation | None:
    """3.3(2): after collection, the trace must update at least every 72 h until delivery."""
    if order.collected is None:
        return None
    gap, last = policy.limits.trace_gap, order.collected.at
    for trace in sorted((t for t in order.traces if t.at >= last), key=Fact.sort_key):
        if trace.at > last + gap:
            break
        if trace.status == "delivered":
            met = trace.sort_key()
            return _obligation(FALSE_DELIVERY, last, last + gap, met, "3.3(2)", "3.3(2)")
        last = trace.at
    evidence = f"no trace update for {gap} after {last.isoformat()}"
    return _obligation(FALSE_DELIVERY, last, last + gap, None, "3.3(2)", "3.3(2)", evidence)


def _invalid_waybill(order: OrderState, policy: Policy) -> Obligation | None:
    """3.3(3): a waybill number that cannot be valid for the carrier chosen."""
    shipped = order.shipped
    if shipped is None or shipped.carrier not in policy.waybill_formats:
        return None
    if _compiled(policy.waybill_formats[shipped.carrier]).fullmatch(shipped.waybill_no):
        return None
    evidence = f"waybill {shipped.waybill_no} is not a valid {shipped.carrier} number"
    return _at_once(FALSE_DELIVERY, shipped, "3.3(3)", evidence, subject="3.3(3)")


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """A waybill format, compiled once: `re.fullmatch` looks the pattern up in `re`'s cache
    on every call, which cost more than the match (every shipped order, every reconcile)."""
    return re.compile(pattern)


def _trace_to_another_address(order: OrderState, created: Creation) -> Obligation | None:
    """3.3(4): a trace going to another postcode than the order's."""
    elsewhere = [t for t in order.traces if t.destination_postcode != created.postcode]
    if not elsewhere:
        return None
    first = min(elsewhere, key=lambda t: t.sort_key())
    evidence = f"trace goes to {first.destination_postcode}, the order to {created.postcode}"
    return _at_once(FALSE_DELIVERY, first, "3.3(4)", evidence, subject="3.3(4)")


def _trace_by_another_carrier(order: OrderState) -> Obligation | None:
    """3.3(5): the trace's carrier is not the one the merchant declared."""
    if order.shipped is None:
        return None
    declared = order.shipped.carrier
    other = [t for t in order.traces if t.carrier != declared]
    if not other:
        return None
    first = min(other, key=lambda t: t.sort_key())
    evidence = f"trace carrier {first.carrier}, declared {declared}"
    return _at_once(FALSE_DELIVERY, first, "3.3(5)", evidence, subject="3.3(5)")


def _complaints(order: OrderState) -> list[Obligation]:
    """3.1: an upheld shortage or wrong-item complaint is a violation of the platform's
    severity; 2.4: a packaging complaint is a warning to the merchant, without points."""
    found = []
    for complaint in order.complaints:
        if complaint.category == "packaging":
            found.append(
                replace(
                    _at_once(PACKAGING, complaint, evidence="packaging complaint upheld"),
                    subject=complaint.event_id,
                )
            )
            continue
        evidence = f"{complaint.category} complaint upheld ({complaint.severity})"
        found.append(
            replace(
                _at_once(SHORTAGE, complaint, evidence=evidence),
                severity=complaint.severity,
                subject=complaint.event_id,  # one clock per complaint; one violation per order
            )
        )
    return found


def _on_calendar(
    rule: Rule,
    since: datetime,
    timed: Timed,
    met: tuple[datetime, str] | None,
    evidence: str,
    subject: str = "",
) -> Obligation:
    """A working-time clock: its calendar and paused stretches travel with it."""
    evidence += f" ({timed.calendar})"
    if timed.paused:
        hours = timed.paused_for.total_seconds() / 3600
        evidence += f"; paused {hours:g} h by closures"
    return replace(
        _obligation(rule, since, timed.due_at, met, subject=subject, evidence=evidence),
        calendar=timed.calendar,
        paused=timed.paused,
    )


def _ipr_response(order: OrderState, policy: Policy) -> Obligation | None:
    """IPR: the respondent files its response within 2 working days of receiving the
    complaint, "otherwise, your response will not be accepted": the complaint proceeds without
    it. A decision (or withdrawal) before then ends the clock too."""
    filed = order.ipr_filed
    if filed is None:
        return None
    timed = policy.deadline(IPR_RESPONSE_OVERDUE.id, filed.at)
    ended = _first(_stamp(order.ipr_response), _stamp(order.ipr_decided))
    evidence = f"no response to complaint {filed.complaint_id} in the response period"
    return _on_calendar(IPR_RESPONSE_OVERDUE, filed.at, timed, ended, evidence)


def _ipr_review(order: OrderState, policy: Policy) -> Obligation | None:
    """IPR: the platform examines a complaint within 10 working days; else escalate."""
    filed = order.ipr_filed
    if filed is None:
        return None
    timed = policy.deadline(IPR_REVIEW_OVERDUE.id, filed.at)
    evidence = f"complaint {filed.complaint_id} not decided in the review period"
    return _on_calendar(IPR_REVIEW_OVERDUE, filed.at, timed, _stamp(order.ipr_decided), evidence)


def _inquiry_reply(order: OrderState, policy: Policy) -> Obligation | None:
    """Customer service answers an email within 24 hours of its working hours."""
    inquiry = order.inquiry
    if inquiry is None:
        return None
    timed = policy.deadline(CS_REPLY_OVERDUE.id, inquiry.at)
    evidence = f"inquiry {inquiry.inquiry_id} not answered in customer-service hours"
    met = _stamp(order.inquiry_answered)
    return _on_calendar(CS_REPLY_OVERDUE, inquiry.at, timed, met, evidence)


def _late_returns(order: OrderState, policy: Policy) -> Iterable[Obligation]:
    """Returns are accepted within 30 days after receipt of the parcel: a request after the
    window is flagged (not accepted) at the moment it is made."""
    if order.delivered is None:
        return
    window = policy.deadline(RETURN_WINDOW_CLOSED.id, order.delivered.at)
    for request in order.returns:
        if request.at <= window.due_at:
            continue
        evidence = (
            f"return {request.return_id} requested after the window closed at "
            f"{window.due_at.isoformat()}: not accepted"
        )
        flagged = _at_once(RETURN_WINDOW_CLOSED, request, evidence=evidence)
        yield replace(flagged, subject=request.return_id, calendar=window.calendar)


class Clocked(Protocol):
    """Anything a timer row is kept for: an obligation's deadline or a warning's time."""

    @property
    def slot(self) -> tuple[str, str]: ...
    @property
    def due_at(self) -> datetime: ...
    @property
    def breached(self) -> bool: ...
    @property
    def calendar(self) -> str | None: ...
    @property
    def paused(self) -> tuple[Interval, ...]: ...
    def is_open_at(self, now: datetime) -> bool: ...


@dataclass(frozen=True)
class Warning:
    """A pre-breach warning: `lead` before an obligation's deadline, sent once if the clock was
    running by then and the obligation was still open at that moment."""

    obligation: Obligation
    lead: timedelta
    due_at: datetime = field(init=False, repr=False, compare=False)
    """`lead` before the obligation's deadline. Set once: a reconcile reads it a dozen times
    per warning (the plan, the timer rows)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "due_at", self.obligation.due_at - self.lead)

    @property
    def slot(self) -> tuple[str, str]:
        return (_warning_rule(self.obligation.rule.id, self.lead), self.obligation.subject)

    @property
    def breached(self) -> bool:
        """Whether it is to be sent: the obligation was not met by the warning time."""
        met_at = self.obligation.met_at
        return met_at is None or met_at > self.due_at

    def is_open_at(self, now: datetime) -> bool:
        return self.obligation.met_at is None and self.due_at > now

    @property
    def calendar(self) -> str | None:
        return self.obligation.calendar

    @property
    def paused(self) -> tuple[Interval, ...]:
        return self.obligation.paused


@cache
def _warning_rule(rule_id: str, lead: timedelta) -> str:
    """A warning's timer name: formatted once per rule and lead (it is asked for per clock)."""
    return f"{rule_id}:warn:{lead.total_seconds():g}s"


def warnings(current: Iterable[Obligation], policy: Policy) -> list[Warning]:
    """The warnings each obligation carries under the policy's lead times (clocks that start
    after a warning's time get no such warning: it would only repeat the deadline)."""
    found = []
    for obligation in current:
        for lead in policy.warning_leads.get(obligation.rule.id, ()):
            warning = Warning(obligation, lead)
            if obligation.since <= warning.due_at:
                found.append(warning)
    return found
