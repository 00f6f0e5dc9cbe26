"""2.1.3: platform-announced special periods change the collection limit of orders created in
them — open orders included, and a passed deadline now extended withdraws its violation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.events import Event
from models.policy import Policy
from tests.builders import DAY, T0, H, collected, event
from tests.builders import created as order_created
from tests.conftest import run


def announce(at: datetime, start: datetime, end: datetime, hours: float, aid: str = "a1") -> Event:
    return event(
        "announcement.published",
        "*",
        at,
        announcement_id=aid,
        applies_from=start.isoformat(),
        applies_until=end.isoformat(),
        ship_within_hours=hours,
    )


def _seen(outcomes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(o["kind"], o["order_id"], o["at"]) for o in outcomes]


def _at(hours: float) -> str:
    return (T0 + hours * H).isoformat().replace("+00:00", "Z")


def test_2_1_3_orders_created_in_the_period_use_the_announced_limit(policy: Policy) -> None:
    events = [
        announce(T0 - DAY, T0, T0 + DAY, 168),
        order_created("in", T0 + H),
        order_created("out", T0 + 2 * DAY),
    ]
    assert _seen(run(events, policy, until=T0 + 20 * DAY)) == [
        ("violation", "out", _at(48 + 120)),  # spot: 120 h
        ("violation", "in", _at(1 + 168)),  # in the period: 168 h
    ]


def test_2_1_3_an_announcement_reschedules_orders_already_open(policy: Policy) -> None:
    # Given an open order whose 120 h deadline has not passed yet
    events = [
        order_created("o1"),
        announce(T0 + 100 * H, T0 - DAY, T0 + DAY, 200),
        collected("o1", T0 + 150 * H),  # late under 120 h, on time under 200 h
    ]
    assert run(events, policy, until=T0 + 20 * DAY) == []


def test_2_1_3_a_passed_deadline_now_extended_withdraws_its_violation(policy: Policy) -> None:
    events = [
        order_created("o1"),
        order_created("o9", at=T0 + 130 * H),  # the clock passes o1's 120 h
        announce(T0 + 130 * H, T0 - DAY, T0 + DAY, 200),
        collected("o1", T0 + 150 * H),
    ]
    outcomes = [o for o in run(events, policy, until=T0 + 20 * DAY) if o["order_id"] == "o1"]
    assert [(o["kind"], o["points"]) for o in outcomes] == [("violation", 4), ("retraction", -4)]
    assert "deadline moved" in outcomes[1]["evidence"]


def test_2_1_3_warnings_follow_the_moved_deadline(policy: Policy) -> None:
    events = [order_created("o1"), announce(T0 + H, T0 - DAY, T0 + DAY, 200)]
    outcomes = run(events, policy, until=T0 + 20 * DAY, warnings=True)
    assert _seen(outcomes) == [
        ("warning", "o1", _at(176)),
        ("warning", "o1", _at(194)),
        ("violation", "o1", _at(200)),
    ]


def test_2_1_3_an_announcement_needs_a_forward_window() -> None:
    import pytest

    from models.events import ContractError

    with pytest.raises(ContractError) as caught:
        announce(T0, T0 + DAY, T0, 100)
    assert caught.value.field == "applies_until"
