"""The contact & IPR page's clocks through the whole pipeline (replay on a virtual clock): IPR
responses and reviews in Hong Kong working days, customer-service replies in its US Eastern
hours, the 30-day returns window, and platform-declared closures that pause working time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from models.events import Event
from models.policy import Policy
from tests.builders import created, event
from tests.conftest import run
from worker.service.replay import Replayer

HKT = ZoneInfo("Asia/Hong_Kong")
ET = ZoneInfo("America/New_York")
FRI_1500 = datetime(2026, 11, 20, 15, 0, tzinfo=HKT)
"""A complaint received on a Friday: the response is due at Tuesday's end (25 Nov 00:00 HKT),
the review at the end of the tenth working day (5 Dec 00:00 HKT)."""
RESPONSE_DUE = "2026-11-24T16:00:00Z"
REVIEW_DUE = "2026-12-04T16:00:00Z"
LATER = datetime(2027, 1, 31, tzinfo=UTC)


def filed(at: datetime = FRI_1500, complaint: str = "C1") -> Event:
    return event(
        "ipr.complaint_filed", f"ipr:{complaint}", at, complaint_id=complaint, merchant_id="m-1"
    )


def responded(at: datetime, complaint: str = "C1") -> Event:
    return event("ipr.response_filed", f"ipr:{complaint}", at, complaint_id=complaint)


def decided(at: datetime, decision: str = "upheld", complaint: str = "C1") -> Event:
    return event(
        "ipr.complaint_decided", f"ipr:{complaint}", at, complaint_id=complaint, decision=decision
    )


def inquiry(at: datetime) -> Event:
    return event("cs.inquiry_received", "cs:Q1", at, inquiry_id="Q1")


def answered(at: datetime) -> Event:
    return event("cs.inquiry_answered", "cs:Q1", at, inquiry_id="Q1")


def closure(declared: datetime, start: datetime, end: datetime, *calendars: str) -> Event:
    return event(
        "calendar.closure_declared",
        "*",
        declared,
        closure_id="t8",
        starts_at=start.isoformat(),
        ends_at=end.isoformat(),
        calendars=list(calendars),
        reason="typhoon signal no. 8",
    )


def _seen(outcomes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(o["kind"], o["rule"], o["order_id"], o["merchant_id"], o["at"]) for o in outcomes]


# --- IPR: the respondent's 2 working days, the platform's 10 ----------------------------------


def test_ipr_no_response_and_no_decision_escalate_at_their_working_day_deadlines(
    policy: Policy,
) -> None:
    outcomes = run([filed()], policy, until=LATER)
    assert _seen(outcomes) == [
        ("escalation", "ipr_response_overdue", "ipr:C1", "m-1", RESPONSE_DUE),
        ("escalation", "ipr_review_overdue", "ipr:C1", "m-1", REVIEW_DUE),
    ]
    assert "hk_working_days" in outcomes[0]["evidence"]
    assert outcomes[0]["clause"] == "IPR: response period"


def test_ipr_a_response_and_a_decision_in_time_raise_nothing(policy: Policy) -> None:
    events = [
        filed(),
        responded(datetime(2026, 11, 24, 23, 59, tzinfo=HKT)),
        decided(datetime(2026, 12, 4, 18, 0, tzinfo=HKT)),
    ]
    assert run(events, policy, until=LATER) == []


def test_ipr_a_late_response_is_not_accepted_the_escalation_stands(policy: Policy) -> None:
    events = [
        filed(),
        responded(datetime(2026, 11, 25, 9, 0, tzinfo=HKT)),
        decided(FRI_1500 + 5 * timedelta(days=1)),
    ]
    assert _seen(run(events, policy, until=LATER)) == [
        ("escalation", "ipr_response_overdue", "ipr:C1", "m-1", RESPONSE_DUE)
    ]


def test_ipr_a_withdrawn_complaint_ends_both_clocks(policy: Policy) -> None:
    events = [filed(), decided(datetime(2026, 11, 23, 9, 0, tzinfo=HKT), "withdrawn")]
    assert run(events, policy, until=LATER) == []


def test_ipr_the_merchant_is_warned_a_day_before_the_response_period_closes(
    policy: Policy,
) -> None:
    outcomes = run(
        [filed(), decided(datetime(2026, 11, 26, tzinfo=HKT))], policy, LATER, warnings=True
    )
    assert _seen(outcomes) == [
        ("warning", "ipr_response_overdue", "ipr:C1", "m-1", "2026-11-23T16:00:00Z"),
        ("escalation", "ipr_response_overdue", "ipr:C1", "m-1", RESPONSE_DUE),
    ]


# --- customer service: 24 h within Sunday 21:00 - Friday 06:00 US Eastern ---------------------


def test_cs_reply_escalates_for_the_platform_when_24_working_hours_pass(policy: Policy) -> None:
    # received Friday 05:59: one minute counts, then the window reopens Sunday 21:00
    events = [inquiry(datetime(2026, 11, 20, 5, 59, tzinfo=ET))]
    events.append(answered(datetime(2026, 11, 23, 21, 0, tzinfo=ET)))
    assert _seen(run(events, policy, until=LATER)) == [
        ("escalation", "cs_reply_overdue", "cs:Q1", None, "2026-11-24T01:59:00Z")
    ]


def test_cs_a_reply_within_the_working_hours_is_on_time(policy: Policy) -> None:
    events = [
        inquiry(datetime(2026, 11, 20, 6, 1, tzinfo=ET)),  # after Friday 06:00: counts from Sunday
        answered(datetime(2026, 11, 23, 20, 59, tzinfo=ET)),
    ]
    assert run(events, policy, until=LATER) == []


# --- returns: within 30 days after receipt -----------------------------------------------------


def test_a_return_requested_after_the_30_day_window_is_flagged(policy: Policy) -> None:
    delivered_at = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
    events = [
        created("o1", datetime(2026, 10, 20, tzinfo=UTC)),
        event(
            "order.collected",
            "o1",
            datetime(2026, 10, 21, tzinfo=UTC),
            waybill_no="JD0001",
            carrier="JD_LOGISTICS",
        ),
        event("order.delivered", "o1", delivered_at),
        event("return.requested", "o1", delivered_at + timedelta(days=30), return_id="r1"),
        event(
            "return.requested", "o1", delivered_at + timedelta(days=30, seconds=1), return_id="r2"
        ),
    ]
    outcomes = run(events, policy, until=LATER)
    assert _seen(outcomes) == [
        ("escalation", "return_window_closed", "o1", "m-1", "2026-12-02T10:00:01Z")
    ]
    assert outcomes[0]["subject"] == "r2"
    assert "not accepted" in outcomes[0]["evidence"]


# --- closures: a calendar change reaches open deadlines ----------------------------------------


def test_a_closure_declared_while_a_complaint_is_open_moves_its_deadline(policy: Policy) -> None:
    # received Monday 23 Nov: due Thursday 00:00 HKT; a typhoon closes Tuesday 09:00-17:00
    start, end = datetime(2026, 11, 24, 9, 0, tzinfo=HKT), datetime(2026, 11, 24, 17, 0, tzinfo=HKT)
    replayer = Replayer(policy)
    for each in [
        filed(datetime(2026, 11, 23, 10, 0, tzinfo=HKT)),
        closure(datetime(2026, 11, 24, 8, 0, tzinfo=HKT), start, end),
        decided(datetime(2026, 12, 1, tzinfo=HKT)),
    ]:
        replayer.feed(each)
    outcomes = [o.as_json() for o in replayer.finish(LATER).in_order()]
    assert _seen(outcomes) == [
        ("warning", "ipr_response_overdue", "ipr:C1", "m-1", "2026-11-25T00:00:00Z"),
        ("escalation", "ipr_response_overdue", "ipr:C1", "m-1", "2026-11-26T00:00:00Z"),
    ]  # Thursday 08:00 HKT, not 00:00
    assert "paused 8 h by closures" in outcomes[1]["evidence"]
    timeline = {view.rule: view for view in replayer.uow.deadlines.timeline("ipr:C1")}
    response = timeline["ipr_response_overdue"]
    assert response.paused == ((start, end),)
    assert response.calendar is not None and "closures t8" in response.calendar


def test_a_closure_declared_after_the_fact_withdraws_an_escalation_it_disproves(
    policy: Policy,
) -> None:
    start, end = datetime(2026, 11, 24, 9, 0, tzinfo=HKT), datetime(2026, 11, 24, 17, 0, tzinfo=HKT)
    events = [
        filed(datetime(2026, 11, 23, 10, 0, tzinfo=HKT)),
        responded(datetime(2026, 11, 26, 7, 0, tzinfo=HKT)),  # late, unless Tuesday was closed
        closure(datetime(2026, 11, 26, 9, 0, tzinfo=HKT), start, end),
        decided(datetime(2026, 12, 1, tzinfo=HKT)),
    ]
    outcomes = run(events, policy, until=LATER)
    assert [(o["kind"], o["at"]) for o in outcomes] == [
        ("escalation", "2026-11-25T16:00:00Z"),
        ("retraction", "2026-11-26T01:00:00Z"),
    ]


def test_a_closure_does_not_touch_elapsed_clocks(policy: Policy) -> None:
    t0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    events = [created("o1", t0), closure(t0, t0, t0 + timedelta(days=3))]
    outcomes = run(events, policy, until=LATER)
    assert [(o["rule"], o["at"]) for o in outcomes] == [
        ("collection_overdue", "2026-11-28T02:00:00Z")  # 120 h, closure or not
    ]


def test_an_edited_calendar_reaches_open_clocks(policy: Policy) -> None:
    # an open complaint, due at Tuesday's end; the policy file then declares Monday a holiday
    from store.memory import MemoryUnitOfWork
    from worker.service.handlers import record_event
    from worker.timers.dispatcher import CalendarWatch

    uow = MemoryUnitOfWork()
    now = FRI_1500 + timedelta(hours=1)
    record_event(filed(), uow, now, policy)
    watch = CalendarWatch()
    assert watch.check(policy, uow, now) == 1  # the first check after a start sweeps
    assert watch.check(policy, uow, now) is None  # nothing changed since

    holiday = policy.calendars["hk_working_days"].model_copy(
        update={"extra_holidays": (datetime(2026, 11, 23).date(),)}
    )
    edited = policy.model_copy(
        update={"calendars": {**policy.calendars, "hk_working_days": holiday}}
    )
    assert watch.check(edited, uow, now) == 1
    due = {view.rule: view.due_at for view in uow.deadlines.timeline("ipr:C1")}
    assert due["ipr_response_overdue"] == datetime(2026, 11, 26, 0, 0, tzinfo=HKT)
