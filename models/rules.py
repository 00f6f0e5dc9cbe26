"""The SLA rules: which obligations an order carries, when each is due, and whether it was met.

`obligations(order, policy)` is the whole rulebook for one order, as a pure function of the facts
folded into its state. Whether an obligation is breached depends only on event times, so the same
facts always give the same verdict, whatever order the events arrived in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from models.order import Creation, Fact, OrderState
from models.policy import Policy

Kind = Literal["violation", "escalation"]


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
RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        COLLECTION_OVERDUE,
        STOCKOUT_CONTACT_OVERDUE,
        CANCELLATION_REVIEW_OVERDUE,
        CANCELLATION_REJECTED_UNSHIPPED,
        CUSTOMS_REFUND_OVERDUE,
    )
}


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
    """Every clock the order carries under `policy`; none before its `order.created` is known."""
    created = order.created
    if created is None:
        return []
    found = [
        _collection(order, created, policy),
        _stockout_contact(order, created, policy),
        _customs_refund(order, policy),
        *_cancellation_reviews(order, policy),
        *_rejections_before_shipping(order),
    ]
    return [obligation for obligation in found if obligation is not None]


def collection_limit(created: Creation, policy: Policy) -> timedelta:
    """2.1.1 / 2.1.2: spot goods 120 h; special goods by their detail page; the longest applies."""
    limits = []
    if created.has_spot_items:
        limits.append(policy.limits.spot_collection)
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
    approved = [(r.at, r.event_id) for r in order.reviews if r.decision == "approved"]
    return min(approved) if approved else None


def _agreed_cancel(order: OrderState) -> tuple[datetime, str] | None:
    agreed = [(c.at, c.event_id) for c in order.contacts if c.outcome == "consumer_agreed_cancel"]
    return min(agreed) if agreed else None


def _obligation(
    rule: Rule,
    since: datetime,
    due_at: datetime,
    met: tuple[datetime, str] | None,
    subject: str = "",
    clause: str | None = None,
) -> Obligation:
    return Obligation(
        rule=rule,
        subject=subject,
        due_at=due_at,
        met_at=met[0] if met else None,
        met_by=met[1] if met else None,
        clause=clause or rule.clause,
        since=since,
    )


def _collection(order: OrderState, created: Creation, policy: Policy) -> Obligation:
    """2.1.1 / 3.2.1(1): collected, or the order cancelled, by the deadline."""
    ended = _first(_stamp(order.collected), _approved_cancellation(order), _agreed_cancel(order))
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


class Clocked(Protocol):
    """Anything a timer row is kept for: an obligation's deadline or a warning's time."""

    @property
    def slot(self) -> tuple[str, str]: ...
    @property
    def due_at(self) -> datetime: ...
    @property
    def breached(self) -> bool: ...
    def is_open_at(self, now: datetime) -> bool: ...


@dataclass(frozen=True)
class Warning:
    """A pre-breach warning: `lead` before an obligation's deadline, sent once if the clock was
    running by then and the obligation was still open at that moment."""

    obligation: Obligation
    lead: timedelta

    @property
    def due_at(self) -> datetime:
        return self.obligation.due_at - self.lead

    @property
    def slot(self) -> tuple[str, str]:
        return (
            f"{self.obligation.rule.id}:warn:{self.lead.total_seconds():g}s",
            self.obligation.subject,
        )

    @property
    def breached(self) -> bool:
        """Whether it is to be sent: the obligation was not met by the warning time."""
        met_at = self.obligation.met_at
        return met_at is None or met_at > self.due_at

    def is_open_at(self, now: datetime) -> bool:
        return self.obligation.met_at is None and self.due_at > now


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
