"""2.1.1 / 2.1.2 / 3.2.1(1): collection at the overseas warehouse within the limit."""

from __future__ import annotations

from models.policy import Policy
from tests.builders import DAY, T0, H, S, cancel_requested, cancel_reviewed, collected, contacted
from tests.builders import created as order_created
from tests.conftest import run

DEADLINE = T0 + 120 * H


def test_2_1_1_collection_exactly_at_120h_is_on_time(policy: Policy) -> None:
    # Given a spot order, When it is collected at exactly 120 h, Then nothing is raised
    assert run([order_created("o1"), collected("o1", DEADLINE)], policy, until=DEADLINE + DAY) == []


def test_2_1_1_collection_one_second_late_is_a_violation(policy: Policy) -> None:
    outcomes = run([order_created("o1"), collected("o1", DEADLINE + S)], policy)
    assert outcomes == [
        {
            "kind": "violation",
            "rule": "collection_overdue",
            "category": "out_of_stock",
            "order_id": "o1",
            "merchant_id": "m-1",
            "at": "2026-03-07T09:00:00Z",
            "severity": "general",
            "points": 4,
            "clause": "2.1.1 / 3.2.1(1)",
            "subject": None,
            "evidence": None,
            "deadline": "2026-03-07T09:00:00Z",
            "capped": None,
        }
    ]


def test_2_1_1_uncollected_order_breaches_when_the_clock_reaches_120h(policy: Policy) -> None:
    assert run([order_created("o1")], policy, until=DEADLINE - S) == []
    [violation] = run([order_created("o1")], policy, until=DEADLINE)
    assert (violation["rule"], violation["at"]) == ("collection_overdue", "2026-03-07T09:00:00Z")


def test_2_1_1_deadline_runs_from_event_time_not_arrival(policy: Policy) -> None:
    # Given an order created six days ago that only arrives now (an outage upstream)
    late_arrival = [order_created("o2", at=T0 + 10 * DAY), order_created("o1", at=T0)]
    # Then its violation is dated at created + 120 h, not at arrival + 120 h
    [violation] = [o for o in run(late_arrival, policy) if o["order_id"] == "o1"]
    assert violation["at"] == "2026-03-07T09:00:00Z"


def test_2_1_2_special_goods_use_the_detail_page_limit(policy: Policy) -> None:
    items = [{"sku": "tea", "quantity": 1, "ship_within_hours": 240.0}]
    events = [order_created("o1", items=items), collected("o1", T0 + 239 * H)]
    assert run(events, policy, until=T0 + 30 * DAY) == []
    [violation] = run([order_created("o1", items=items)], policy, until=T0 + 30 * DAY)
    assert violation["at"] == (T0 + 240 * H).isoformat().replace("+00:00", "Z")


def test_2_1_2_the_longest_item_limit_applies_to_the_order(policy: Policy) -> None:
    items = [
        {"sku": "spot", "quantity": 1},
        {"sku": "short-special", "quantity": 1, "ship_within_hours": 72.0},
        {"sku": "long-special", "quantity": 2, "ship_within_hours": 200.0},
    ]
    [violation] = run([order_created("o1", items=items)], policy, until=T0 + 30 * DAY)
    assert violation["at"] == "2026-03-10T17:00:00Z"  # T0 + 200 h


def test_2_1_2_special_only_order_with_a_shorter_limit_is_due_earlier(policy: Policy) -> None:
    items = [{"sku": "fresh", "quantity": 1, "ship_within_hours": 72.0}]
    [violation] = run([order_created("o1", items=items)], policy, until=T0 + 30 * DAY)
    assert violation["at"] == "2026-03-05T09:00:00Z"  # T0 + 72 h


def test_3_2_2_restock_agreement_moves_the_collection_deadline(policy: Policy) -> None:
    agreed = T0 + 200 * H
    events = [order_created("o1"), contacted("o1", T0 + 30 * H, new_ship_by=agreed)]
    assert run(events + [collected("o1", agreed)], policy, until=T0 + 30 * DAY) == []
    [violation] = run(events, policy, until=T0 + 30 * DAY)
    assert violation["at"] == "2026-03-10T17:00:00Z"


def test_3_2_2_restock_agreement_after_the_deadline_does_not_move_it(policy: Policy) -> None:
    events = [order_created("o1"), contacted("o1", DEADLINE + H, new_ship_by=T0 + 300 * H)]
    [violation] = run(events, policy, until=T0 + 30 * DAY)
    assert violation["at"] == "2026-03-07T09:00:00Z"


def test_2_1_1_approved_cancellation_before_the_deadline_ends_the_obligation(
    policy: Policy,
) -> None:
    events = [
        order_created("o1"),
        cancel_requested("o1", T0 + H),
        cancel_reviewed("o1", T0 + 2 * H, "approved"),
    ]
    assert run(events, policy, until=T0 + 30 * DAY) == []


def test_2_1_1_cancellation_approved_after_the_deadline_does_not_excuse_it(
    policy: Policy,
) -> None:
    events = [
        order_created("o1"),
        cancel_requested("o1", DEADLINE - H),
        cancel_reviewed("o1", DEADLINE + H, "approved"),
    ]
    assert [o["rule"] for o in run(events, policy)] == ["collection_overdue"]


def test_3_2_2_consumer_agreed_cancel_ends_the_collection_obligation(policy: Policy) -> None:
    events = [order_created("o1"), contacted("o1", T0 + 10 * H)]
    assert run(events, policy, until=T0 + 30 * DAY) == []


def test_2_1_1_late_evidence_of_collection_retracts_the_violation(policy: Policy) -> None:
    # Given the violation was raised at 120 h
    # When a collection scan dated 119 h arrives a day later
    events = [
        order_created("o1"),
        order_created("o2", at=DEADLINE + DAY),
        collected("o1", DEADLINE - H),
    ]
    outcomes = [o for o in run(events, policy) if o["order_id"] == "o1"]
    # Then the violation is withdrawn and its points reversed; nothing is deleted
    assert [(o["kind"], o["points"]) for o in outcomes] == [("violation", 4), ("retraction", -4)]
    retraction = outcomes[1]
    assert retraction["rule"] == "collection_overdue"
    assert retraction["at"] == "2026-03-08T09:00:00Z"  # when the evidence was learnt
    assert "met on time" in retraction["evidence"]


def test_2_1_1_collection_known_before_created_arrives_counts(policy: Policy) -> None:
    events = [collected("o1", T0 + 5 * H), order_created("o1")]
    assert run(events, policy, until=T0 + 30 * DAY) == []


def test_2_1_1_replaying_the_same_event_twice_changes_nothing(policy: Policy) -> None:
    create = order_created("o1")
    assert run([create, create], policy, until=T0 + 30 * DAY) == run(
        [create], policy, until=T0 + 30 * DAY
    )
