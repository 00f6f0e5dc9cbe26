"""3.2.2: after a stock-out, contact the consumer within 48 h of the order; Chapter III cap."""

from __future__ import annotations

from models.policy import Policy
from tests.builders import DAY, T0, H, S, collected, contacted, stockout
from tests.builders import created as order_created
from tests.conftest import run

WINDOW_END = T0 + 48 * H


def _rules(outcomes: list[dict[str, object]]) -> list[tuple[object, object, object]]:
    return [(o["kind"], o["rule"], o["at"]) for o in outcomes]


def test_3_2_2_no_contact_within_48h_is_a_violation(policy: Policy) -> None:
    [violation] = run([order_created("o1"), stockout("o1", T0 + H)], policy, until=WINDOW_END)
    assert violation["rule"] == "stockout_contact_overdue"
    assert (violation["clause"], violation["category"]) == ("3.2.2", "out_of_stock")
    assert (violation["at"], violation["points"]) == ("2026-03-04T09:00:00Z", 4)


def test_3_2_2_contact_at_exactly_48h_is_on_time(policy: Policy) -> None:
    events = [
        order_created("o1"),
        stockout("o1", T0 + H),
        contacted("o1", WINDOW_END, new_ship_by=T0 + 100 * H),
    ]
    assert run(events, policy, until=T0 + 99 * H) == []


def test_3_2_2_contact_one_second_late_is_a_violation(policy: Policy) -> None:
    events = [
        order_created("o1"),
        stockout("o1", T0 + H),
        contacted("o1", WINDOW_END + S, new_ship_by=T0 + 100 * H),
    ]
    assert _rules(run(events, policy, until=T0 + 99 * H)) == [
        ("violation", "stockout_contact_overdue", "2026-03-04T09:00:00Z")
    ]


def test_3_2_2_stockout_declared_after_48h_without_contact_breaches_at_declaration(
    policy: Policy,
) -> None:
    events = [order_created("o1"), stockout("o1", T0 + 50 * H)]
    assert _rules(run(events, policy)) == [
        ("violation", "stockout_contact_overdue", "2026-03-04T11:00:00Z")
    ]


def test_3_2_2_contact_within_48h_then_late_declaration_is_on_time(policy: Policy) -> None:
    events = [order_created("o1"), contacted("o1", T0 + 47 * H), stockout("o1", T0 + 50 * H)]
    assert run(events, policy, until=T0 + 30 * DAY) == []


def test_3_2_2_collection_within_48h_ends_the_contact_obligation(policy: Policy) -> None:
    events = [order_created("o1"), stockout("o1", T0 + H), collected("o1", T0 + 20 * H)]
    assert run(events, policy, until=T0 + 30 * DAY) == []


def test_chapter_iii_one_out_of_stock_violation_per_order(policy: Policy) -> None:
    # Given a stock-out never contacted and never collected: both 3.2.2 and 2.1.1 are breached
    outcomes = run([order_created("o1"), stockout("o1", T0 + H)], policy, until=T0 + 30 * DAY)
    # Then the order carries one out_of_stock violation only, the first
    assert _rules(outcomes) == [("violation", "stockout_contact_overdue", "2026-03-04T09:00:00Z")]


def test_chapter_iii_cap_frees_the_category_when_its_violation_is_withdrawn(
    policy: Policy,
) -> None:
    # Given the 3.2.2 violation stands at 48 h
    # When evidence of an on-time contact arrives after the 120 h collection deadline
    events = [
        order_created("o1"),
        stockout("o1", T0 + H),
        order_created("o2", at=T0 + 130 * H),
        contacted("o1", T0 + 40 * H, new_ship_by=T0 + 100 * H),
    ]
    outcomes = [o for o in run(events, policy) if o["order_id"] == "o1"]
    # Then 3.2.2 is withdrawn and the still-missed collection (moved to 100 h) takes the slot
    assert _rules(outcomes) == [
        ("violation", "stockout_contact_overdue", "2026-03-04T09:00:00Z"),
        ("violation", "collection_overdue", "2026-03-06T13:00:00Z"),
        ("retraction", "stockout_contact_overdue", "2026-03-07T19:00:00Z"),
    ]


def test_chapter_iii_a_late_received_stockout_supersedes_the_later_collection_violation(
    policy: Policy,
) -> None:
    # Given a 2.1.1 violation raised at 120 h on an order the runtime knew nothing more of
    # When a stock-out declared at 1 h, never followed by contact, reaches it only at 130 h
    events = [
        order_created("o1"),
        order_created("o2", at=T0 + 130 * H),
        stockout("o1", T0 + H),
    ]
    outcomes = [o for o in run(events, policy) if o["order_id"] == "o1"]
    # Then the category's one violation is its earliest breach, 3.2.2 at 48 h (as if every fact
    # had been known in time): the collection violation is withdrawn, its points reversed
    assert _rules(outcomes) == [
        ("violation", "stockout_contact_overdue", "2026-03-04T09:00:00Z"),
        ("violation", "collection_overdue", "2026-03-07T09:00:00Z"),
        ("retraction", "collection_overdue", "2026-03-07T19:00:00Z"),
    ]
    assert [o["points"] for o in outcomes] == [4, 4, -4]
    assert "superseded by the earlier breach stockout_contact_overdue" in outcomes[2]["evidence"]
    on_time = run([order_created("o1"), stockout("o1", T0 + H)], policy, until=T0 + 131 * H)
    assert _rules(on_time) == _rules(outcomes[:1])
