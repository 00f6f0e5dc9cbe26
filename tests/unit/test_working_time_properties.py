"""Working-time arithmetic against a brute-force oracle: minute by minute for business hours,
day by day for working days, written independently of models/calendars.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import holidays
from hypothesis import given, settings
from hypothesis import strategies as st

from config.policy import load_policy
from config.settings import DEFAULT_POLICY
from models.calendars import BusinessHours, Closure, Window, WorkingDays, due_after
from models.events import Event, parse_document
from models.outcomes import OutcomeKey
from store.memory import MemoryOutcomes
from worker.service.replay import Replayer

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
    hk = holidays.country_holidays("HK", years=range(2025, 2030), categories=("public", "optional"))
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


# --- the outcome does not depend on the order events arrive in -------------------------------

BASE = datetime(2026, 11, 15, 16, 0, tzinfo=UTC)  # Monday 16 November 2026, 00:00 in Hong Kong
POLICY = load_policy(DEFAULT_POLICY)


def _at(hours: float) -> str:
    return (BASE + timedelta(hours=hours)).isoformat()


@st.composite
def working_time_logs(draw: st.DrawFn) -> list[Event]:
    """An IPR complaint and an inquiry with maybe their answers, and up to two closures."""
    hour = st.integers(min_value=0, max_value=400)
    docs = [
        {
            "type": "ipr.complaint_filed",
            "complaint_id": "C1",
            "merchant_id": "m-1",
            "at": draw(hour),
        },
        {"type": "cs.inquiry_received", "inquiry_id": "Q1", "at": draw(hour)},
    ]
    if draw(st.booleans()):
        docs.append({"type": "ipr.response_filed", "complaint_id": "C1", "at": draw(hour)})
    if draw(st.booleans()):
        decision = draw(st.sampled_from(["upheld", "rejected", "withdrawn"]))
        docs.append(
            {
                "type": "ipr.complaint_decided",
                "complaint_id": "C1",
                "decision": decision,
                "at": draw(hour),
            }
        )
    if draw(st.booleans()):
        docs.append({"type": "cs.inquiry_answered", "inquiry_id": "Q1", "at": draw(hour)})
    for number in range(draw(st.integers(min_value=0, max_value=2))):
        start, length = draw(hour), draw(st.integers(min_value=1, max_value=40))
        docs.append({
            "type": "calendar.closure_declared", "order_id": "*", "closure_id": f"c{number}",
            "starts_at": _at(start), "ends_at": _at(start + length), "at": draw(hour),
            "calendars": draw(st.sampled_from([[], ["hk_working_days"], ["cs_hours"]])),
        })  # fmt: skip
    events = []
    for number, document in enumerate(docs):
        at = document.pop("at")
        events.append(
            parse_document({"event_id": f"w-{number}", "occurred_at": _at(at), **document})
        )
    return events


def _standing(events: list[Event]) -> set[tuple[str, OutcomeKey]]:
    """The escalations that stand at the end (withdrawn ones and warnings left out)."""
    replayer = Replayer(POLICY)
    for event in events:
        replayer.feed(event)
    replayer.finish(BASE + timedelta(days=80))
    outcomes = replayer.uow.outcomes
    assert isinstance(outcomes, MemoryOutcomes)
    return {
        (order_id, key)
        for order_id, recorded in outcomes.by_order.items()
        for key, outcome in recorded.items()
        if not outcome.retracted and outcome.kind != "warning"
    }


@settings(max_examples=150, deadline=None)
@given(working_time_logs(), st.randoms())
def test_working_time_outcomes_do_not_depend_on_arrival_order(
    events: list[Event], rnd: Any
) -> None:
    in_time_order = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert _standing(shuffled) == _standing(in_time_order)


def test_a_later_declaration_of_a_closure_amends_it_whatever_the_arrival_order() -> None:
    filed = parse_document(
        {"type": "ipr.complaint_filed", "event_id": "f", "occurred_at": _at(10),
         "complaint_id": "C1", "merchant_id": "m-1"}
    )  # fmt: skip

    def declared(event_id: str, at: float, hours: int) -> Event:
        return parse_document(
            {"type": "calendar.closure_declared", "event_id": event_id, "occurred_at": _at(at),
             "closure_id": "t8", "starts_at": _at(33), "ends_at": _at(33 + hours)}
        )  # fmt: skip

    first, amended = declared("c-1", 20, 3), declared("c-2", 21, 8)  # extended to 8 h
    dues = []
    for order in ([filed, first, amended], [filed, amended, first]):
        replayer = Replayer(POLICY)
        for event in order:
            replayer.feed(event)
        views = replayer.uow.deadlines.timeline("ipr:C1")
        dues.append(next(v.due_at for v in views if v.rule == "ipr_response_overdue"))
    assert dues[0] == dues[1] == BASE + timedelta(days=3, hours=8)
