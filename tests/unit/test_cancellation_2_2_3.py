"""2.2.3 / 2.3.2: review a cancellation request within 24 h; 2.2.3 requires approval unshipped."""

from __future__ import annotations

from models.policy import Policy
from tests.builders import DAY, T0, H, S, cancel_requested, cancel_reviewed, collected, shipped
from tests.builders import created as order_created
from tests.conftest import run

REQUEST = T0 + 2 * H
REVIEW_DUE = REQUEST + 24 * H


def _escalations(outcomes: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [
        (o["kind"], o["rule"], o["clause"], o["at"], o["subject"])
        for o in outcomes
        if o["rule"] != "collection_overdue"
    ]


def test_2_2_3_review_at_exactly_24h_is_on_time(policy: Policy) -> None:
    events = [
        order_created("o1"),
        cancel_requested("o1", REQUEST),
        cancel_reviewed("o1", REVIEW_DUE, "approved"),
    ]
    assert run(events, policy, until=T0 + 30 * DAY) == []


def test_2_2_3_review_one_second_late_escalates(policy: Policy) -> None:
    events = [
        order_created("o1"),
        cancel_requested("o1", REQUEST),
        cancel_reviewed("o1", REVIEW_DUE + S, "approved"),
    ]
    assert _escalations(run(events, policy)) == [
        ("escalation", "cancellation_review_overdue", "2.2.3", "2026-03-03T11:00:00Z", "c-1")
    ]


def test_2_2_3_escalation_carries_no_points(policy: Policy) -> None:
    events = [order_created("o1"), cancel_requested("o1", REQUEST)]
    [escalation] = run(events, policy, until=REVIEW_DUE)
    assert (escalation["points"], escalation["severity"], escalation["category"]) == (
        None,
        None,
        None,
    )


def test_2_3_2_request_after_shipping_before_collection_cites_2_3_2(policy: Policy) -> None:
    events = [order_created("o1"), shipped("o1", T0 + H), cancel_requested("o1", REQUEST)]
    assert _escalations(run(events, policy, until=REVIEW_DUE)) == [
        ("escalation", "cancellation_review_overdue", "2.3.2", "2026-03-03T11:00:00Z", "c-1")
    ]


def test_2_3_2_request_on_a_collected_order_starts_no_clock(policy: Policy) -> None:
    events = [
        order_created("o1"),
        shipped("o1", T0 + H),
        collected("o1", T0 + 90 * 60 * S),
        cancel_requested("o1", REQUEST),
    ]
    assert run(events, policy, until=T0 + 30 * DAY) == []


def test_2_2_3_each_request_has_its_own_clock(policy: Policy) -> None:
    events = [
        order_created("o1"),
        cancel_requested("o1", REQUEST, cancellation_id="c-1"),
        cancel_reviewed("o1", REQUEST + H, "rejected", cancellation_id="c-1"),
        shipped("o1", REQUEST + 2 * H),
        cancel_requested("o1", REQUEST + 3 * H, cancellation_id="c-2"),
    ]
    assert _escalations(run(events, policy, until=REQUEST + 3 * H + 24 * H)) == [
        ("escalation", "cancellation_rejected_unshipped", "2.2.3", "2026-03-02T12:00:00Z", "c-1"),
        ("escalation", "cancellation_review_overdue", "2.3.2", "2026-03-03T14:00:00Z", "c-2"),
    ]


def test_2_2_3_rejecting_a_cancellation_of_an_unshipped_order_escalates_at_once(
    policy: Policy,
) -> None:
    events = [
        order_created("o1"),
        cancel_requested("o1", REQUEST),
        cancel_reviewed("o1", REQUEST + H, "rejected"),
    ]
    assert _escalations(run(events, policy)) == [
        ("escalation", "cancellation_rejected_unshipped", "2.2.3", "2026-03-02T12:00:00Z", "c-1")
    ]


def test_2_3_2_rejecting_after_shipping_is_allowed(policy: Policy) -> None:
    events = [
        order_created("o1"),
        shipped("o1", T0 + H),
        cancel_requested("o1", REQUEST),
        cancel_reviewed("o1", REQUEST + H, "rejected"),
        collected("o1", REQUEST + 5 * H),
    ]
    assert run(events, policy, until=T0 + 30 * DAY) == []


def test_2_2_3_late_evidence_of_an_on_time_review_retracts_the_escalation(
    policy: Policy,
) -> None:
    events = [
        order_created("o1"),
        cancel_requested("o1", REQUEST),
        order_created("o2", at=REVIEW_DUE + H),
        cancel_reviewed("o1", REQUEST + H, "approved"),
    ]
    outcomes = [o for o in run(events, policy) if o["order_id"] == "o1"]
    assert [(o["kind"], o["rule"]) for o in outcomes] == [
        ("escalation", "cancellation_review_overdue"),
        ("retraction", "cancellation_review_overdue"),
    ]


def test_2_2_3_review_seen_before_its_request_still_counts(policy: Policy) -> None:
    events = [
        order_created("o1"),
        cancel_reviewed("o1", REQUEST + H, "approved"),
        cancel_requested("o1", REQUEST),
    ]
    assert run(events, policy, until=T0 + 30 * DAY) == []
