"""The rest of the rulebook: 2.1 carrier, 2.1.4 refusal, 3.1 shortage caps, 2.4 packaging,
3.3 false delivery (1)–(5) and 3.2.1(3)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from models.events import Event
from models.policy import Policy
from tests.builders import DAY, T0, H, collected, event
from tests.builders import created as order_created
from tests.conftest import run

JD = {"waybill_no": "JDVB00012345", "carrier": "JD_LOGISTICS"}


def _breaches(outcomes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(o["rule"], o["clause"], o["at"], o["severity"], o["points"]) for o in outcomes]


def _at(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def trace(order_id: str, at: datetime, status: str = "in_transit", **fields: Any) -> Event:
    values = {**JD, "destination_postcode": "200000", "status": status, **fields}
    return event("logistics.tracked", order_id, at, **values)


def complaint(order_id: str, at: datetime, category: str, severity: str) -> Event:
    return event("complaint.upheld", order_id, at, category=category, severity=severity)


def test_2_1_shipping_with_another_carrier_is_a_violation(policy: Policy) -> None:
    events = [
        order_created("o1"),
        event("order.shipped", "o1", T0 + H, waybill_no="SF123456", carrier="SF_EXPRESS"),
        event("order.collected", "o1", T0 + 50 * H, waybill_no="SF123456", carrier="SF_EXPRESS"),
    ]
    assert _breaches(run(events, policy, until=T0 + 10 * DAY)) == [
        ("wrong_carrier", "2.1 / Chapter III", _at(T0 + H), "general", 2)
    ]


def test_2_1_4_refusing_to_ship_is_8_points_and_closes_the_collection_clock(
    policy: Policy,
) -> None:
    events = [
        order_created("o1"),
        event("merchant.refused_shipment", "o1", T0 + 10 * H, reason="price_increase"),
    ]
    assert _breaches(run(events, policy, until=T0 + 10 * DAY)) == [
        ("refusal_to_ship", "2.1.4 / 3.2.1(2)", _at(T0 + 10 * H), "general", 8)
    ]


def test_3_1_serious_shortage_is_8_points_slight_2(policy: Policy) -> None:
    events = [
        order_created("o1"),
        order_created("o2"),
        complaint("o1", T0 + 100 * H, "shortage", "serious"),
        complaint("o2", T0 + 101 * H, "wrong_item", "slight"),
        collected("o1", T0 + 50 * H),
        collected("o2", T0 + 50 * H),
    ]
    outcomes = run(events, policy, until=T0 + 10 * DAY)
    assert [(o["rule"], o["severity"], o["points"], o["capped"]) for o in outcomes] == [
        ("shortage", "serious", 8, None),
        ("shortage", "slight", 2, False),
    ]


def _slight_shortages(times: list[datetime]) -> list[Event]:
    events: list[Event] = []
    for number, at in enumerate(times):
        events += [
            order_created(f"o{number}", at - 60 * H),
            collected(f"o{number}", at - 10 * H),
            complaint(f"o{number}", at, "shortage", "slight"),
        ]
    return sorted(events, key=lambda e: e.occurred_at)


def test_chapter_iii_slight_shortages_cap_at_8_points_a_week(policy: Policy) -> None:
    # Given five slight shortages for one merchant in one Shanghai week (Mon 2 Mar 2026)
    monday = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
    outcomes = run(_slight_shortages([monday + n * DAY for n in range(5)]), policy)
    # Then the first four cost 2 each, the fifth is recorded, capped, with no points
    assert [(o["points"], o["capped"]) for o in outcomes] == [(2, False)] * 4 + [(0, True)]


def test_chapter_iii_the_cap_resets_at_midnight_monday_in_shanghai(policy: Policy) -> None:
    # Given four slight shortages in one week; the fifth at Sunday 23:59 Shanghai, the sixth
    # at Monday 00:00 Shanghai (= Sunday 16:00 UTC, still Sunday in UTC)
    week = [datetime(2026, 3, 2, 1, 0, tzinfo=UTC) + n * DAY for n in range(4)]
    sunday_late = datetime(2026, 3, 8, 15, 59, tzinfo=UTC)
    monday_midnight = datetime(2026, 3, 8, 16, 0, tzinfo=UTC)
    outcomes = run(_slight_shortages([*week, sunday_late, monday_midnight]), policy)
    assert [(o["points"], o["capped"]) for o in outcomes][-2:] == [(0, True), (2, False)]


def test_2_4_a_packaging_complaint_is_a_warning_without_points(policy: Policy) -> None:
    events = [order_created("o1"), complaint("o1", T0 + 5 * H, "packaging", "slight")]
    [notice] = run(events, policy, until=T0 + 2 * H + 5 * H, warnings=True)
    assert (notice["kind"], notice["rule"], notice["clause"], notice["points"]) == (
        "warning",
        "packaging",
        "2.4",
        None,
    )


def _shipped_jd(order_id: str, at: datetime) -> Event:
    return event("order.shipped", order_id, at, **JD)


@pytest.mark.parametrize(
    ("case", "extra", "clause", "at_hours"),
    [
        ("no trace", [], "3.3(1)", 1 + 24),
        ("trace too late", [("trace", 1 + 25, {})], "3.3(1)", 1 + 24),
        ("invalid waybill", [("waybill", 0, {})], "3.3(3)", 1),
        ("another postcode", [("trace", 3, {"destination_postcode": "518000"})], "3.3(4)", 3),
        ("another carrier", [("trace", 3, {"carrier": "SF_EXPRESS"})], "3.3(5)", 3),
    ],
)
def test_3_3_false_delivery_cases(
    full_policy: Policy, case: str, extra: list[Any], clause: str, at_hours: int
) -> None:
    events = [order_created("o1")]
    ship = _shipped_jd("o1", T0 + H)
    for kind, hours, fields in extra:
        if kind == "waybill":
            ship = event("order.shipped", "o1", T0 + H, waybill_no="12345", carrier="JD_LOGISTICS")
        else:
            events.append(trace("o1", T0 + hours * H, **fields))
    events += [ship, collected("o1", T0 + 40 * H), trace("o1", T0 + 60 * H, "delivered")]
    outcomes = [o for o in run(events, full_policy, until=T0 + 10 * DAY)]
    assert _breaches(outcomes) == [
        ("false_delivery", clause, _at(T0 + at_hours * H), "general", 12)
    ], case


def test_3_3_2_no_trace_update_for_72h_after_collection(full_policy: Policy) -> None:
    events = [
        order_created("o1"),
        _shipped_jd("o1", T0 + H),
        trace("o1", T0 + 2 * H),
        collected("o1", T0 + 40 * H),
        trace("o1", T0 + 60 * H),
        trace("o1", T0 + 140 * H, "delivered"),  # 80 h after the last update
    ]
    assert _breaches(run(events, full_policy, until=T0 + 10 * DAY)) == [
        ("false_delivery", "3.3(2)", _at(T0 + 132 * H), "general", 12)
    ]


def test_3_3_a_timely_trace_chain_until_delivery_is_clean(full_policy: Policy) -> None:
    events = [
        order_created("o1"),
        _shipped_jd("o1", T0 + H),
        trace("o1", T0 + 2 * H),
        collected("o1", T0 + 40 * H),
        trace("o1", T0 + 100 * H),
        trace("o1", T0 + 170 * H, "delivered"),
    ]
    assert run(events, full_policy, until=T0 + 20 * DAY) == []


def test_3_3_at_most_one_false_delivery_per_order(full_policy: Policy) -> None:
    events = [
        order_created("o1"),
        event("order.shipped", "o1", T0 + H, waybill_no="12345", carrier="JD_LOGISTICS"),
        trace("o1", T0 + 3 * H, destination_postcode="518000", waybill_no="12345"),
        collected("o1", T0 + 40 * H),
        trace("o1", T0 + 60 * H, "delivered", waybill_no="12345"),
    ]
    outcomes = run(events, full_policy, until=T0 + 10 * DAY)
    assert [(o["rule"], o["clause"]) for o in outcomes] == [("false_delivery", "3.3(3)")]


def test_3_2_1_3_false_delivery_never_collected_is_one_out_of_stock_case(
    full_policy: Policy,
) -> None:
    # Given a waybill with no trace (false delivery), and the order never collected
    events = [order_created("o1"), _shipped_jd("o1", T0 + H)]
    outcomes = run(events, full_policy, until=T0 + 10 * DAY)
    # Then: the false delivery, and one out-of-stock case for the missed collection, not two
    assert [(o["rule"], o["category"]) for o in outcomes] == [
        ("false_delivery", "false_delivery"),
        ("collection_overdue", "out_of_stock"),
    ]


def test_repeat_window_is_configurable_per_category(policy: Policy) -> None:
    tight = policy.model_copy(update={"repeat_windows": {"wrong_carrier": 2 * H}})
    sf = {"waybill_no": "SF1", "carrier": "SF_EXPRESS"}
    events = [
        order_created("o1"),
        order_created("o2"),
        event("order.shipped", "o1", T0 + H, **sf),
        event("order.shipped", "o2", T0 + 4 * H, **sf),
    ]
    outcomes = run(events, tight, until=T0 + 5 * H)
    assert [o["severity"] for o in outcomes] == ["general", "general"]
    outcomes = run(events, policy, until=T0 + 5 * H)
    assert [o["severity"] for o in outcomes] == ["general", "serious"]
