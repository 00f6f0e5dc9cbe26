"""Working-time calendars: when a clock that runs on working days or business hours is due.

Three kinds of clock, named in the policy (`[calendars.*]`):

- `elapsed`: every second counts (the rulebook's 24 h / 48 h / 120 h clocks).
- `working_days`: whole days in a time zone that are neither a weekend day nor a public
  holiday of a region (Hong Kong by default, from the `holidays` package) nor listed as an
  extra holiday. The day a clock starts on is not counted: "2 working days from receipt" ends
  at the local midnight that closes the second working day after the day of receipt.
- `business_hours`: weekly windows in a named time zone (customer service: Sunday 21:00 to
  Friday 06:00, US Eastern). A clock started outside a window starts at the next opening.

Working time is real time inside the calendar's open intervals, computed in UTC from local
wall times with `zoneinfo`, so arithmetic is exact across daylight-saving changes. A
platform-declared closure pauses working-time clocks for its duration: the paused stretches are
returned with the deadline so its timeline can show them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from importlib.metadata import version
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import holidays
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

_HOLIDAYS_VERSION = version("holidays")
Interval = tuple[datetime, datetime]
"""[start, end) in UTC."""

_WEEKLY_TIME = r"^(mon|tue|wed|thu|fri|sat|sun) ([01]\d|2[0-3]):[0-5]\d$"
"""A weekly wall time such as 'sun 21:00' (00:00-23:59; a window closing at midnight says
'mon 00:00')."""
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEARCH_LIMIT = timedelta(days=3 * 366)
"""A working-time clock that finds no open time within this span is a broken calendar."""


class CalendarError(ValueError):
    """A calendar that cannot produce a deadline (no open time at all, unknown region)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


class Closure(_Frozen):
    """A platform-declared closure (a typhoon day, an office closure): working-time clocks on
    the named calendars (all of them when `calendars` is empty) pause from `starts_at` to
    `ends_at`."""

    closure_id: str
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    calendars: tuple[str, ...] = ()
    reason: str = ""
    declared_at: AwareDatetime | None = None
    """When the platform declared it: a later declaration of the same id amends it."""
    declared_by: str = ""
    """The declaring event's id (orders two declarations made at the same instant)."""

    def supersedes(self, other: Closure) -> bool:
        """Whether this declaration is the later one (missing times count as earliest)."""
        return _declared(self) > _declared(other)

    def applies_to(self, calendar: str) -> bool:
        return not self.calendars or calendar in self.calendars


def _declared(closure: Closure) -> tuple[datetime, str]:
    return (closure.declared_at or datetime.min.replace(tzinfo=UTC), closure.declared_by)


class Elapsed(_Frozen):
    kind: Literal["elapsed"] = "elapsed"

    def describe(self) -> str:
        return "elapsed time"


class WorkingDays(_Frozen):
    kind: Literal["working_days"] = "working_days"
    timezone: str = "Asia/Hong_Kong"
    region: str | None = "HK"
    """Public holidays of this region (ISO 3166 code, `holidays` package); None for none."""
    categories: tuple[str, ...] = ("public", "optional")
    """The `holidays` categories that are days off. Hong Kong's general holidays are its
    statutory ('public') ones plus 'optional' (Good Friday, the day after, Easter Monday...);
    other regions may only know 'public'."""
    weekend: tuple[Annotated[str, Field(pattern="^(mon|tue|wed|thu|fri|sat|sun)$")], ...] = (
        "sat",
        "sun",
    )
    extra_holidays: tuple[date, ...] = ()
    """Days off the region's list does not know (a declared day, a company holiday)."""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        _zone(name)
        return name

    @field_validator("region")
    @classmethod
    def _known_region(cls, region: str | None) -> str | None:
        if region is not None and region not in holidays.list_supported_countries():
            raise ValueError(f"the holidays package knows no region {region!r}")
        return region

    @model_validator(mode="after")
    def _known_categories(self) -> WorkingDays:
        if self.region is None:
            return self
        known = holidays.country_holidays(self.region).supported_categories
        unknown = sorted(set(self.categories) - set(known))
        if unknown:
            raise ValueError(f"categories: {self.region} has no holiday category {unknown[0]!r}")
        return self

    def is_working_day(self, day: date) -> bool:
        if WEEKDAYS[day.weekday()] in self.weekend or day in self.extra_holidays:
            return False
        if self.region is None:
            return True
        return day not in _public_holidays(self.region, day.year, self.categories)

    def describe(self) -> str:
        kinds = "+".join(self.categories)
        region = f"{self.region} holidays ({kinds}; holidays {_HOLIDAYS_VERSION})"
        return f"working days in {self.timezone}, {region if self.region else 'no holidays'}"


class Window(_Frozen):
    """A weekly opening, e.g. ("sun 21:00", "fri 06:00"); it may wrap over the week's end."""

    opens: Annotated[str, Field(pattern=_WEEKLY_TIME)]
    closes: Annotated[str, Field(pattern=_WEEKLY_TIME)]

    def occurrences(self, monday: date, zone: ZoneInfo) -> Interval:
        """This window in the week starting on `monday`, in UTC (exact across DST)."""
        open_day, open_time = _weekly(self.opens)
        close_day, close_time = _weekly(self.closes)
        span = (close_day - open_day) % 7
        if span == 0 and close_time <= open_time:
            span = 7
        opens_on = monday + timedelta(days=open_day)
        start = datetime.combine(opens_on, open_time, tzinfo=zone)
        end = datetime.combine(opens_on + timedelta(days=span), close_time, tzinfo=zone)
        return (start.astimezone(UTC), end.astimezone(UTC))


class BusinessHours(_Frozen):
    kind: Literal["business_hours"] = "business_hours"
    timezone: str
    windows: tuple[Window, ...] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        _zone(name)
        return name

    def describe(self) -> str:
        hours = ", ".join(f"{w.opens}–{w.closes}" for w in self.windows)
        return f"business hours {hours} {self.timezone}"


Calendar = Annotated[Elapsed | WorkingDays | BusinessHours, Field(discriminator="kind")]


@dataclass(frozen=True)
class Timed:
    """A working-time deadline: when it falls, what it paused for, which calendar said so."""

    due_at: datetime
    paused: tuple[Interval, ...]
    calendar: str
    """The calendar in force (name, description, closures applied) — kept with the deadline."""

    @property
    def paused_for(self) -> timedelta:
        return sum((end - start for start, end in self.paused), timedelta(0))


def due_after(
    start: datetime,
    length: timedelta,
    name: str,
    calendar: Elapsed | WorkingDays | BusinessHours,
    closures: Sequence[Closure] = (),
) -> Timed:
    """The deadline of a clock of `length` working time on `calendar`, started at `start`.

    For `working_days`, `length` is a whole number of days: the clock ends at the close of the
    last such day. Closures on this calendar pause it (never an `elapsed` clock)."""
    start = start.astimezone(UTC)
    if isinstance(calendar, Elapsed):
        return Timed(start + length, (), _label(name, calendar, ()))
    mine = sorted((c for c in closures if c.applies_to(name)), key=lambda c: c.starts_at)
    cuts = [(c.starts_at.astimezone(UTC), c.ends_at.astimezone(UTC)) for c in mine]
    if isinstance(calendar, WorkingDays):
        intervals = _working_days(start, calendar)
        length = _length_of_days(intervals, length, calendar)
        intervals = _working_days(start, calendar)
    else:
        intervals = _business_hours(start, calendar)
    due, paused = _count(intervals, length, cuts, start)
    used = tuple(
        c for c, cut in zip(mine, cuts, strict=True) if any(_overlaps(cut, p) for p in paused)
    )
    return Timed(due, paused, _label(name, calendar, used))


def _label(
    name: str, calendar: Elapsed | WorkingDays | BusinessHours, used: Sequence[Closure]
) -> str:
    text = f"{name}: {calendar.describe()}"
    if used:
        text += "; closures " + ", ".join(c.closure_id for c in used)
    digest = hashlib.sha256(calendar.model_dump_json().encode()).hexdigest()[:8]
    return f"{text} [{digest}]"


def _length_of_days(
    intervals: Iterator[Interval], length: timedelta, calendar: WorkingDays
) -> timedelta:
    """The real time in the first N working days (a day is 23, 24 or 25 hours across DST)."""
    days = length / timedelta(days=1)
    if days != int(days):
        raise CalendarError(f"a working-days clock needs whole days, not {length}")
    total, counted = timedelta(0), 0
    zone = _zone(calendar.timezone)
    for start, end in intervals:
        day = start.astimezone(zone).date()
        while counted < days and start < end:
            next_midnight = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
            step_end = min(end, next_midnight.astimezone(UTC))
            total += step_end - start
            counted += 1
            start, day = step_end, day + timedelta(days=1)
        if counted >= days:
            return total
    raise CalendarError(f"no {days:g} working days within {SEARCH_LIMIT.days} days")


def _count(
    intervals: Iterator[Interval],
    length: timedelta,
    closures: Sequence[Interval],
    start: datetime,
) -> tuple[datetime, tuple[Interval, ...]]:
    """Walk open intervals, minus closures, until `length` of open time has passed."""
    remaining, paused = length, []
    for opened, closed in intervals:
        if opened - start > SEARCH_LIMIT:
            break
        for piece, cut in _minus(opened, closed, closures):
            if cut:
                paused.append(piece)
                continue
            if piece[1] - piece[0] >= remaining:
                return piece[0] + remaining, tuple(paused)
            remaining -= piece[1] - piece[0]
    raise CalendarError(f"no working time within {SEARCH_LIMIT.days} days of {start}")


def _minus(
    opened: datetime, closed: datetime, closures: Sequence[Interval]
) -> Iterator[tuple[Interval, bool]]:
    """Split an open interval into (piece, closed_by_a_closure) parts, in time order."""
    cursor = opened
    for c_start, c_end in closures:
        if c_end <= cursor or c_start >= closed:
            continue
        if c_start > cursor:
            yield (cursor, c_start), False
        cut_end = min(c_end, closed)
        yield (max(c_start, cursor), cut_end), True
        cursor = cut_end
        if cursor >= closed:
            return
    if cursor < closed:
        yield (cursor, closed), False


def _overlaps(a: Interval, b: Interval) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _working_days(start: datetime, calendar: WorkingDays) -> Iterator[Interval]:
    """Open intervals of a working-days calendar from the day after `start`'s local day:
    consecutive working days merged into one interval."""
    zone = _zone(calendar.timezone)
    day = start.astimezone(zone).date() + timedelta(days=1)
    run_start: datetime | None = None
    while True:
        midnight = datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)
        if calendar.is_working_day(day):
            run_start = run_start or midnight
        elif run_start is not None:
            yield (run_start, midnight)
            run_start = None
        day += timedelta(days=1)
        if midnight - start > SEARCH_LIMIT:
            if run_start is not None:
                yield (run_start, midnight)
            return


def _business_hours(start: datetime, calendar: BusinessHours) -> Iterator[Interval]:
    """Weekly windows from `start` on, clipped to it, in time order, overlaps merged."""
    zone = _zone(calendar.timezone)
    local = start.astimezone(zone).date()
    monday = local - timedelta(days=local.weekday() + 7)  # a wrapping window opens last week
    pending: Interval | None = None
    while True:
        week = sorted(w.occurrences(monday, zone) for w in calendar.windows)
        for opened, closed in week:
            if closed <= start:
                continue
            opened = max(opened, start)
            if pending is not None and opened <= pending[1]:
                pending = (pending[0], max(pending[1], closed))
                continue
            if pending is not None:
                yield pending
            pending = (opened, closed)
        monday += timedelta(days=7)
        if monday - start.date() > SEARCH_LIMIT:
            if pending is not None:
                yield pending
            return


def _weekly(text: str) -> tuple[int, time]:
    day, clock = text.split()
    hours, minutes = clock.split(":")
    return WEEKDAYS.index(day), time(int(hours), int(minutes))


@cache
def _public_holidays(region: str, year: int, categories: tuple[str, ...]) -> holidays.HolidayBase:
    return holidays.country_holidays(region, years=year, categories=categories)
