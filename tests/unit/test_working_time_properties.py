"""Working-time arithmetic against a brute-force oracle: minute by minute for business hours,
day by day for working days, written independently of models/calendars.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
from hypothesis import given, settings
from hypothesis import strategies as st

from models.calendars import BusinessHours, Closure, Window, WorkingDays, due_after

ET = ZoneInfo("America/New_York")
HKT = ZoneInfo("Asia/Hong_Kong")
MINUTE = timedelta(minutes=1)
CS = BusinessHours(
    timezone="America/New_York", windows=(Window(opens="sun 21:00", closes="fri 06:00"),)
)

# starts on whole minutes over two years that hold both DST switches of each year
starts = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
).map(lambda t: t.replace(second=0, microsecond=0))


def cs_open(moment: datetime) -> bool:
    """Sunday 21:00 to Friday 06:00 on the New York wall clock."""
    local = moment.astimezone(ET)
    day, clock = local.weekday(), local.time()
    if day == 6:
        return clock >= time(21, 0)
    if day == 4:
        return clock < time(6, 0)
    return day in (0, 1, 2, 3)


def oracle_cs_due(
    start: datetime, minutes: int, closed: tuple[datetime, datetime] | None
) -> datetime:
    moment, counted = start, 0
    while True:
        paused = closed is not None and closed[0] <= moment < closed[1]
        if cs_open(moment) and not paused:
            counted += 1
            if counted == minutes:
                return moment + MINUTE
        moment += MINUTE


@settings(max_examples=40, deadline=None)
@given(start=starts, hours=st.integers(min_value=1, max_value=30))
def test_business_hours_match_a_minute_by_minute_count(start: datetime, hours: int) -> None:
    assert due_after(start, timedelta(hours=hours), "cs_hours", CS).due_at == oracle_cs_due(
        start, hours * 60, None
    )


@settings(max_examples=30, deadline=None)
@given(
    start=starts,
    offset=st.integers(min_value=0, max_value=3 * 24 * 60),
    length=st.integers(min_value=1, max_value=12 * 60),
)
def test_a_closure_pauses_business_hours_exactly(start: datetime, offset: int, length: int) -> None:
    closed = (start + offset * MINUTE, start + (offset + length) * MINUTE)
    closure = Closure(closure_id="c", starts_at=closed[0], ends_at=closed[1])
    timed = due_after(start, timedelta(hours=24), "cs_hours", CS, [closure])
    assert timed.due_at == oracle_cs_due(start, 24 * 60, closed)
    paused_minutes = sum(
        1 for m in _minutes(start, timed.due_at) if cs_open(m) and closed[0] <= m < closed[1]
    )
    assert timed.paused_for == paused_minutes * MINUTE


def _minutes(start: datetime, end: datetime) -> list[datetime]:
    count = int((end - start) / MINUTE)
    return [start + i * MINUTE for i in range(count)]


def oracle_working_days_due(start: datetime, days: int) -> datetime:
    """Count whole Hong Kong working days after the day of receipt; due at the next midnight."""
    hk = holidays.country_holidays("HK", years=range(2025, 2030))
    day: date = start.astimezone(HKT).date()
    counted = 0
    while counted < days:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in hk:
            counted += 1
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=HKT)


@settings(max_examples=60, deadline=None)
@given(start=starts, days=st.integers(min_value=1, max_value=15))
def test_working_days_match_a_day_by_day_count(start: datetime, days: int) -> None:
    timed = due_after(start, timedelta(days=days), "hk", WorkingDays())
    assert timed.due_at == oracle_working_days_due(start, days)
