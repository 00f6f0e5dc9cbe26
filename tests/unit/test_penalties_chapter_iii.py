"""Chapter III: points for out_of_stock are 4 (general) or 8 (serious, a repeat in 30 days)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models.policy import Policy
from tests.builders import DAY, T0, H, S, collected
from tests.builders import created as order_created
from tests.conftest import run

FIRST_BREACH = T0 + 120 * H


def _points(outcomes: list[dict[str, object]]) -> list[tuple[object, object, object, object]]:
    return [(o["order_id"], o["kind"], o["severity"], o["points"]) for o in outcomes]


@pytest.mark.parametrize(
    ("gap", "severity", "points"),
    [
        (timedelta(days=1), "serious", 8),
        (timedelta(days=30), "serious", 8),
        (timedelta(days=30) + S, "general", 4),
    ],
)
def test_chapter_iii_repeat_within_30_days_is_serious(
    policy: Policy, gap: timedelta, severity: str, points: int
) -> None:
    events = [order_created("o1"), order_created("o2", at=T0 + gap)]
    outcomes = run(events, policy, until=T0 + gap + 200 * H)
    assert _points(outcomes) == [
        ("o1", "violation", "general", 4),
        ("o2", "violation", severity, points),
    ]


def test_chapter_iii_repeat_counts_per_merchant(policy: Policy) -> None:
    events = [order_created("o1", merchant="m-1"), order_created("o2", merchant="m-2")]
    outcomes = run(events, policy, until=T0 + 10 * DAY)
    assert [o["severity"] for o in outcomes] == ["general", "general"]


def test_chapter_iii_a_withdrawn_violation_does_not_make_the_next_serious(policy: Policy) -> None:
    # Given o1's violation (120 h) is withdrawn at 122 h by late evidence of collection
    events = [
        order_created("o1"),
        order_created("o2", at=T0 + DAY),
        order_created("o3", at=FIRST_BREACH + 2 * H),
        collected("o1", FIRST_BREACH - H),
    ]
    outcomes = run(events, policy, until=T0 + 30 * DAY)
    # Then o2 (144 h) is a first offence again, and o3 (242 h) a repeat of o2
    assert _points(outcomes) == [
        ("o1", "violation", "general", 4),
        ("o1", "retraction", "general", -4),
        ("o2", "violation", "general", 4),
        ("o3", "violation", "serious", 8),
    ]


def test_chapter_iii_points_add_up_per_merchant(policy: Policy) -> None:
    from worker.service.replay import Replayer

    replayer = Replayer(policy)
    for event in [
        order_created("o1"),
        order_created("o2", at=T0 + H),
        order_created("o3", T0 + 2 * H),
    ]:
        replayer.feed(event)
    result = replayer.finish(T0 + 10 * DAY)
    assert result.points_by_merchant() == {"m-1": 4 + 8 + 8}
    assert replayer.uow.ledger.totals() == {"m-1": 20}
