"""Pre-breach warnings: 24 h and 6 h before 2.1.1's 120 h, 4 h before 2.2.3's 24 h, 12 h before
3.2.2's 48 h — once each, only while the obligation is still open."""

from __future__ import annotations

from typing import Any

from models.policy import Policy
from store.memory import MemoryUnitOfWork
from tests.builders import (
    DAY,
    T0,
    H,
    cancel_requested,
    cancel_reviewed,
    collected,
    contacted,
    stockout,
)
from tests.builders import created as order_created
from tests.conftest import run


def _at(hours: float) -> str:
    return (T0 + hours * H).isoformat().replace("+00:00", "Z")


def _seen(outcomes: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return [(o["kind"], o["rule"], o["at"]) for o in outcomes]


def test_2_1_1_warned_24h_and_6h_before_an_uncollected_order_breaches(policy: Policy) -> None:
    outcomes = run([order_created("o1")], policy, until=T0 + 10 * DAY, warnings=True)
    assert _seen(outcomes) == [
        ("warning", "collection_overdue", _at(96)),
        ("warning", "collection_overdue", _at(114)),
        ("violation", "collection_overdue", _at(120)),
    ]
    assert {o["deadline"] for o in outcomes} == {_at(120)}
    assert outcomes[0]["evidence"] == f"24 h before the deadline {_at(120)}"


def test_2_1_1_no_warning_after_the_obligation_is_met(policy: Policy) -> None:
    events = [order_created("o1"), collected("o1", T0 + 100 * H)]
    assert _seen(run(events, policy, until=T0 + 10 * DAY, warnings=True)) == [
        ("warning", "collection_overdue", _at(96))
    ]
    events = [order_created("o1"), collected("o1", T0 + 90 * H)]
    assert run(events, policy, until=T0 + 10 * DAY, warnings=True) == []


def test_2_2_3_warned_4h_before_the_review_deadline(policy: Policy) -> None:
    events = [order_created("o1"), cancel_requested("o1", T0 + H)]
    outcomes = run(events, policy, until=T0 + 25 * H, warnings=True)
    assert _seen(outcomes) == [
        ("warning", "cancellation_review_overdue", _at(21)),
        ("escalation", "cancellation_review_overdue", _at(25)),
    ]
    reviewed = events + [cancel_reviewed("o1", T0 + 20 * H)]
    assert run(reviewed, policy, until=T0 + 30 * H, warnings=True) == []


def test_3_2_2_warned_12h_before_the_contact_deadline(policy: Policy) -> None:
    events = [order_created("o1"), stockout("o1", T0 + 10 * H), contacted("o1", T0 + 40 * H)]
    assert _seen(run(events, policy, until=T0 + 10 * DAY, warnings=True)) == [
        ("warning", "stockout_contact_overdue", _at(36))
    ]


def test_3_2_2_a_clock_started_after_the_warning_time_gets_no_warning(policy: Policy) -> None:
    events = [order_created("o1"), stockout("o1", T0 + 40 * H), contacted("o1", T0 + 45 * H)]
    assert run(events, policy, until=T0 + 10 * DAY, warnings=True) == []


def test_3_2_2_a_moved_deadline_is_warned_of_again(policy: Policy) -> None:
    agreed = T0 + 200 * H
    events = [
        order_created("o1"),
        contacted("o1", T0 + 100 * H, new_ship_by=agreed),
        collected("o1", T0 + 199 * H),
    ]
    assert _seen(run(events, policy, until=T0 + 10 * DAY, warnings=True)) == [
        ("warning", "collection_overdue", _at(96)),
        ("warning", "collection_overdue", _at(176)),
        ("warning", "collection_overdue", _at(194)),
    ]


def test_a_sent_warning_stays_when_late_evidence_withdraws_the_violation(policy: Policy) -> None:
    events = [
        order_created("o1"),
        order_created("o2", at=T0 + 130 * H),
        collected("o1", T0 + 95 * H),  # learnt at 130 h
    ]
    outcomes = [o for o in run(events, policy, warnings=True) if o["order_id"] == "o1"]
    assert [(o["kind"], o["at"]) for o in outcomes] == [
        ("warning", _at(96)),
        ("warning", _at(114)),
        ("violation", _at(120)),
        ("retraction", _at(130)),
    ]


def test_each_warning_is_sent_once_however_often_events_are_redelivered(policy: Policy) -> None:
    create = order_created("o1")
    once = run([create], policy, until=T0 + 5 * DAY, warnings=True)
    again = run([create, create, create], policy, until=T0 + 5 * DAY, warnings=True)
    assert once == again and len(once) == 3


def test_warnings_have_their_own_timer_rows(policy: Policy) -> None:
    from worker.service.replay import Replayer

    uow = MemoryUnitOfWork()
    Replayer(policy, uow).feed(order_created("o1"))
    assert sorted(rule for (_order, rule, _subject) in uow.deadlines.rows) == [
        "collection_overdue",
        "collection_overdue:warn:21600s",
        "collection_overdue:warn:86400s",
    ]
    assert [o.kind for o in uow.outcomes.log] == []
    assert len(uow.alerts.bodies) == 0
