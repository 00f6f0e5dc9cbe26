"""Merchant standing (Chapter III): points over a rolling 12 months; crossing a threshold
escalates once, naming the platform measure."""

from __future__ import annotations

from typing import Any

from models.policy import Policy
from tests.builders import DAY, T0, H, collected
from tests.builders import created as order_created
from tests.conftest import run


def _standing(outcomes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [
        (o["order_id"], o["subject"], o["at"])
        for o in outcomes
        if o["rule"] == "standing_threshold"
    ]


def _at(hours: float) -> str:
    return (T0 + hours * H).isoformat().replace("+00:00", "Z")


def test_crossing_12_and_24_points_escalates_each_threshold_once(shipped_policy: Policy) -> None:
    # Given uncollected orders a day apart: 4, then 8, 8, 8 points (repeats are serious)
    events = [order_created(f"o{n}", at=T0 + n * DAY) for n in range(4)]
    outcomes = run(events, shipped_policy.model_copy(update={"trace_checks": False}), T0 + 9 * DAY)
    # Then 12 points (4 + 8) reach "warning" at o1, 28 (+ 8 + 8) reach "unshelve" at o3
    assert _standing(outcomes) == [
        ("o1", "warning", _at(24 + 120)),
        ("o3", "unshelve_commodities", _at(72 + 120)),
    ]
    escalation = next(o for o in outcomes if o["rule"] == "standing_threshold")
    assert (escalation["kind"], escalation["clause"], escalation["points"]) == (
        "escalation",
        "Chapter III",
        None,
    )


def test_points_older_than_the_window_do_not_count(shipped_policy: Policy) -> None:
    short = shipped_policy.model_copy(
        update={"trace_checks": False, "standing_window": 2 * DAY, "repeat_window": H}
    )
    events = [order_created(f"o{n}", at=T0 + n * 3 * DAY) for n in range(4)]
    assert _standing(run(events, short, T0 + 20 * DAY)) == []  # never 12 within two days


def test_a_withdrawn_violation_leaves_the_escalation_but_frees_the_points(
    shipped_policy: Policy,
) -> None:
    policy = shipped_policy.model_copy(update={"trace_checks": False})
    events = [
        order_created("o0"),
        order_created("o1", at=T0 + DAY),
        order_created("o9", at=T0 + 150 * H),
        collected("o1", T0 + 100 * H),  # learnt at 150 h: o1 was on time
        order_created("o2", at=T0 + 2 * DAY),
    ]
    outcomes = run(events, policy, T0 + 9 * DAY)
    assert [s[1] for s in _standing(outcomes)] == ["warning", "warning"]


def test_slatimer_merchant_shows_the_standing_traced_to_each_violation(
    shipped_policy: Policy, sqlite_engine: Any
) -> None:
    from datetime import timedelta

    from tests.conftest import sql_uow
    from worker.service.standing import merchant_standing

    policy = shipped_policy.model_copy(update={"trace_checks": False})
    events = [order_created(f"o{n}", at=T0 + n * DAY) for n in range(3)]
    run(events, policy, T0 + 9 * DAY, uow=sql_uow(sqlite_engine))
    report = merchant_standing(sqlite_engine, policy, "m-1", T0 + 9 * DAY)
    assert report["points"] == 4 + 8 + 8
    assert report["by_category"] == {"out_of_stock": 20}
    assert report["measures"] == ["warning"]
    assert [(e["order_id"], e["points"], e["clause"]) for e in report["timeline"]] == [
        ("o0", 4, "2.1.1 / 3.2.1(1)"),
        ("o1", 8, "2.1.1 / 3.2.1(1)"),
        ("o2", 8, "2.1.1 / 3.2.1(1)"),
    ]
    later = merchant_standing(sqlite_engine, policy, "m-1", T0 + 400 * DAY + timedelta(hours=1))
    assert later["points"] == 0 and later["measures"] == []
