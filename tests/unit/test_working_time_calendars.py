"""Working-time calendars (contact & IPR page): working days in Hong Kong, customer-service hours
in US Eastern time, platform-declared closures — with fixed dates across weekends, public
holidays, Lunar New Year and daylight-saving switches."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from models.calendars import BusinessHours, Closure, Elapsed, Window, WorkingDays, due_after
from models.policy import Policy

HKT = ZoneInfo("Asia/Hong_Kong")
ET = ZoneInfo("America/New_York")
HOURS = timedelta(hours=1)


@pytest.fixture(scope="module")
def rules() -> Policy:
    """The default calendars and clocks (the policy file does not change them)."""
    return Policy(effective_from=datetime(2022, 5, 14, tzinfo=UTC))


def hk(*args: int) -> datetime:
    return datetime(*args, tzinfo=HKT)  # type: ignore[misc]


def et(*args: int) -> datetime:
    return datetime(*args, tzinfo=ET)  # type: ignore[misc]


# --- IPR response: 2 working days in Hong Kong, the day of receipt not counted -------------


def test_a_weekend_is_not_a_working_day(rules: Policy) -> None:
    # received Friday afternoon: Monday and Tuesday are the two days; due at Tuesday's end
    due = rules.deadline("ipr_response_overdue", hk(2026, 11, 20, 15, 0)).due_at
    assert due == hk(2026, 11, 25, 0, 0)


def test_a_hong_kong_public_holiday_is_skipped(rules: Policy) -> None:
    # 1 July (HKSAR Establishment Day, a Wednesday) is not a working day
    due = rules.deadline("ipr_response_overdue", hk(2026, 6, 30, 10, 0)).due_at
    assert due == hk(2026, 7, 4, 0, 0)  # Thursday 2 and Friday 3 July


def test_lunar_new_year_holidays_are_skipped(rules: Policy) -> None:
    # 2026: 17-19 February are the Lunar New Year holidays (Tuesday to Thursday)
    response = rules.deadline("ipr_response_overdue", hk(2026, 2, 16, 10, 0)).due_at
    assert response == hk(2026, 2, 24, 0, 0)  # Friday 20 and Monday 23
    review = rules.deadline("ipr_review_overdue", hk(2026, 2, 16, 10, 0)).due_at
    assert review == hk(2026, 3, 6, 0, 0)  # 10 working days: 20, 23-27 Feb, 2-5 Mar


def test_lunar_new_year_on_a_saturday(rules: Policy) -> None:
    # 2027: New Year's day is Saturday 6 February; Monday 8 and Tuesday 9 are holidays
    due = rules.deadline("ipr_response_overdue", hk(2027, 2, 5, 9, 0)).due_at
    assert due == hk(2027, 2, 12, 0, 0)  # Wednesday 10 and Thursday 11


def test_a_complaint_received_on_a_holiday_starts_on_the_next_working_day(rules: Policy) -> None:
    assert rules.deadline("ipr_response_overdue", hk(2026, 7, 1, 23, 0)).due_at == hk(
        2026, 7, 4, 0, 0
    )


def test_the_calendar_in_force_is_named_with_the_deadline(rules: Policy) -> None:
    calendar = rules.deadline("ipr_response_overdue", hk(2026, 11, 20, 15, 0)).calendar
    assert calendar.startswith("hk_working_days: working days in Asia/Hong_Kong, HK holidays")
    assert "public+optional; holidays 0.109" in calendar


# Hong Kong's general holidays of 2026 as gazetted (the weekdays among them): the calendar
# must know each one, statutory or not — Good Friday and the Easter days are not statutory
HK_GENERAL_HOLIDAYS_2026 = [
    (1, 1), (2, 17), (2, 18), (2, 19), (4, 3), (4, 6), (4, 7), (5, 1), (5, 25), (6, 19),
    (7, 1), (10, 1), (10, 19), (12, 25),
]  # fmt: skip


def test_every_hong_kong_general_holiday_is_a_day_off() -> None:
    calendar = WorkingDays()
    for month, day in HK_GENERAL_HOLIDAYS_2026:
        assert not calendar.is_working_day(date(2026, month, day)), (month, day)
    assert calendar.is_working_day(date(2026, 4, 8))


def test_good_friday_and_the_easter_days_are_skipped(rules: Policy) -> None:
    # received Thursday 2 April 2026: 3, 4 (Sat), 5 (Sun), 6 and 7 April are days off
    due = rules.deadline("ipr_response_overdue", hk(2026, 4, 2, 10, 0)).due_at
    assert due == hk(2026, 4, 10, 0, 0)  # Wednesday 8 and Thursday 9


def test_a_region_must_know_the_holiday_categories() -> None:
    with pytest.raises(ValidationError, match="US has no holiday category 'optional'"):
        WorkingDays(region="US")
    assert not WorkingDays(region="US", categories=("public",)).is_working_day(date(2026, 7, 3))


# --- customer service: 24 hours within Sunday 21:00 - Friday 06:00, US Eastern ---------------


def test_friday_0559_counts_one_minute_then_waits_for_sunday_night(rules: Policy) -> None:
    due = rules.deadline("cs_reply_overdue", et(2026, 11, 20, 5, 59)).due_at
    assert due == et(2026, 11, 23, 20, 59)  # 1 min on Friday + 23 h 59 min from Sunday 21:00


def test_friday_0601_is_outside_the_hours_so_the_clock_starts_sunday_2100(rules: Policy) -> None:
    due = rules.deadline("cs_reply_overdue", et(2026, 11, 20, 6, 1)).due_at
    assert due == et(2026, 11, 23, 21, 0)


def test_a_weekday_inquiry_is_answered_within_24_elapsed_hours(rules: Policy) -> None:
    assert rules.deadline("cs_reply_overdue", et(2026, 11, 24, 12, 0)).due_at == et(
        2026, 11, 25, 12, 0
    )


def test_the_window_reopens_at_local_2100_after_the_spring_dst_switch(rules: Policy) -> None:
    # 14 March 2027 02:00 the clocks go forward: Sunday 21:00 is then UTC-4, not UTC-5
    due = rules.deadline("cs_reply_overdue", et(2027, 3, 12, 5, 0)).due_at
    assert due == et(2027, 3, 15, 20, 0)  # 1 h on Friday + 23 h from Sunday 21:00 EDT
    assert due == datetime(2027, 3, 16, 0, 0, tzinfo=UTC)


def test_the_window_reopens_at_local_2100_after_the_autumn_dst_switch(rules: Policy) -> None:
    due = rules.deadline("cs_reply_overdue", et(2026, 10, 30, 5, 0)).due_at
    assert due == et(2026, 11, 2, 20, 0)
    assert due == datetime(2026, 11, 3, 1, 0, tzinfo=UTC)


def test_working_hours_are_real_hours_across_a_dst_switch_inside_a_window() -> None:
    # a window open over the whole switch weekend: 24 working hours are 24 real hours, which
    # the wall clock shows as 25 (02:00-03:00 does not exist on 14 March 2027)
    weekend = BusinessHours(
        timezone="America/New_York", windows=(Window(opens="sat 00:00", closes="mon 00:00"),)
    )
    start = et(2027, 3, 13, 12, 0)
    due = due_after(start, 24 * HOURS, "weekend", weekend).due_at
    assert due - start == 24 * HOURS
    assert due.astimezone(ET).replace(tzinfo=None) == datetime(2027, 3, 14, 13, 0)


def test_a_working_day_across_a_dst_switch_lasts_its_real_length() -> None:
    # New York working days (weekends off, no holidays): Sunday 14 March 2027 has 23 hours
    days = WorkingDays(timezone="America/New_York", region=None, weekend=())
    due = due_after(et(2027, 3, 13, 12, 0), timedelta(days=1), "ny", days).due_at
    assert due == et(2027, 3, 15, 0, 0)
    assert due - et(2027, 3, 14, 0, 0) == 23 * HOURS


# --- closures pause working-time clocks, and show it ------------------------------------------


def typhoon(start: datetime, end: datetime, *calendars: str) -> Closure:
    return Closure(closure_id="t8", starts_at=start, ends_at=end, calendars=calendars)


def test_a_declared_closure_pauses_the_clock_for_its_length(rules: Policy) -> None:
    # received Monday: Tuesday and Wednesday count, due Thursday 00:00; a typhoon closes
    # the platform 09:00-17:00 on Tuesday, so the clock stops for 8 h
    closure = typhoon(hk(2026, 11, 24, 9, 0), hk(2026, 11, 24, 17, 0))
    paused = rules.model_copy(update={"closures": (closure,)})
    timed = paused.deadline("ipr_response_overdue", hk(2026, 11, 23, 10, 0))
    assert timed.due_at == hk(2026, 11, 26, 8, 0)
    assert timed.paused == ((hk(2026, 11, 24, 9, 0), hk(2026, 11, 24, 17, 0)),)
    assert timed.paused_for == 8 * HOURS
    assert "closures t8" in timed.calendar


def test_a_closure_on_a_weekend_pauses_nothing(rules: Policy) -> None:
    closure = typhoon(hk(2026, 11, 21, 0, 0), hk(2026, 11, 23, 0, 0))
    timed = rules.model_copy(update={"closures": (closure,)}).deadline(
        "ipr_response_overdue", hk(2026, 11, 20, 15, 0)
    )
    assert (timed.due_at, timed.paused) == (hk(2026, 11, 25, 0, 0), ())


def test_a_closure_of_another_calendar_does_not_pause_this_one(rules: Policy) -> None:
    closure = typhoon(hk(2026, 11, 24, 9, 0), hk(2026, 11, 24, 17, 0), "cs_hours")
    timed = rules.model_copy(update={"closures": (closure,)}).deadline(
        "ipr_response_overdue", hk(2026, 11, 23, 10, 0)
    )
    assert timed.due_at == hk(2026, 11, 26, 0, 0)


def test_a_closure_pauses_business_hours(rules: Policy) -> None:
    closure = typhoon(et(2026, 11, 24, 12, 0), et(2026, 11, 24, 15, 30), "cs_hours")
    timed = rules.model_copy(update={"closures": (closure,)}).deadline(
        "cs_reply_overdue", et(2026, 11, 24, 10, 0)
    )
    assert timed.due_at == et(2026, 11, 25, 13, 30)
    assert timed.paused_for == timedelta(hours=3, minutes=30)


def test_an_elapsed_clock_never_pauses() -> None:
    closure = typhoon(hk(2026, 11, 24, 9, 0), hk(2026, 11, 24, 17, 0))
    timed = due_after(hk(2026, 11, 23, 10, 0), timedelta(days=30), "elapsed", Elapsed(), [closure])
    assert (timed.due_at, timed.paused) == (hk(2026, 12, 23, 10, 0), ())


# --- the policy's calendars are checked when the file is read ---------------------------------


def _policy(**fields: object) -> Policy:
    return Policy.model_validate({"effective_from": "2026-01-01T00:00:00Z", **fields})


def test_a_clock_must_name_a_known_calendar() -> None:
    with pytest.raises(ValidationError, match=r"clocks.cs_reply_overdue.calendar: no calendar"):
        _policy(clocks={"cs_reply_overdue": {"calendar": "nope", "length": "24h"}})


def test_a_working_days_clock_counts_whole_days() -> None:
    with pytest.raises(ValidationError, match=r"clocks.ipr_response_overdue.length"):
        _policy(clocks={"ipr_response_overdue": {"calendar": "hk_working_days", "length": "36h"}})


def test_an_unknown_time_zone_or_region_is_refused() -> None:
    with pytest.raises(ValidationError, match="unknown time zone 'Mars/Olympus'"):
        _policy(calendars={"x": {"kind": "working_days", "timezone": "Mars/Olympus"}})
    with pytest.raises(ValidationError, match="no region 'XX'"):
        _policy(calendars={"x": {"kind": "working_days", "region": "XX"}})


def test_a_policy_file_can_add_holidays_and_change_hours() -> None:
    policy = _policy(
        calendars={
            "hk_working_days": {"kind": "working_days", "extra_holidays": ["2026-11-23"]},
            "cs_hours": {
                "kind": "business_hours",
                "timezone": "America/New_York",
                "windows": [{"opens": "mon 09:00", "closes": "mon 17:00"}],
            },
        }
    )
    assert policy.deadline("ipr_response_overdue", hk(2026, 11, 20, 15, 0)).due_at == hk(
        2026, 11, 26, 0, 0
    )
    # 8 open hours a week: 24 of them take three Mondays
    assert policy.deadline("cs_reply_overdue", et(2026, 11, 23, 9, 0)).due_at == et(
        2026, 12, 7, 17, 0
    )


def test_a_window_time_must_be_a_wall_time() -> None:
    with pytest.raises(ValidationError, match="opens"):
        Window(opens="sun 24:00", closes="mon 01:00")


def test_the_working_time_rules_follow_the_policys_calendars(rules: Policy) -> None:
    assert rules.working_time_rules == {
        "ipr_response_overdue",
        "ipr_review_overdue",
        "cs_reply_overdue",
    }
    moved = _policy(
        clocks={"return_window_closed": {"calendar": "hk_working_days", "length": "20d"}}
    )
    assert "return_window_closed" in moved.working_time_rules
