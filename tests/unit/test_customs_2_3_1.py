"""2.3.1: after a failed customs clearance, the merchant completes the refund within 24 h."""

from __future__ import annotations

from models.policy import Policy
from tests.builders import DAY, T0, H, S, collected, customs_failed, refunded
from tests.builders import created as order_created
from tests.conftest import run

FAILED = T0 + 100 * H
DUE = FAILED + 24 * H


def _base() -> list:  # type: ignore[type-arg]
    return [order_created("o1"), collected("o1", T0 + 50 * H), customs_failed("o1", FAILED)]


def test_2_3_1_refund_at_exactly_24h_is_on_time(policy: Policy) -> None:
    assert run(_base() + [refunded("o1", DUE)], policy, until=T0 + 30 * DAY) == []


def test_2_3_1_refund_one_second_late_escalates(policy: Policy) -> None:
    [escalation] = run(_base() + [refunded("o1", DUE + S)], policy)
    assert (escalation["kind"], escalation["rule"], escalation["clause"]) == (
        "escalation",
        "customs_refund_overdue",
        "2.3.1",
    )
    assert escalation["at"] == "2026-03-07T13:00:00Z"


def test_2_3_1_no_refund_escalates_when_the_clock_reaches_24h(policy: Policy) -> None:
    assert run(_base(), policy, until=DUE - S) == []
    assert [o["rule"] for o in run(_base(), policy, until=DUE)] == ["customs_refund_overdue"]
