"""The policy: every number the rules use, loaded from a policy file (see config/policies/).

Clause numbers are facts of the rulebook and live with the rules; limits, windows and points are
policy data so an announced rule change (4.2) or a demo with second-scale limits needs no code.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from models.calendars import (
    BusinessHours,
    Calendar,
    Closure,
    Elapsed,
    Timed,
    Window,
    WorkingDays,
    due_after,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Read '120h', '30d', '90s' or '1.5m' as a timedelta; other values pass to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration such as '120h', '30d' or '90s'")
        return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), Field(gt=timedelta(0))]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Limits(_Frozen):
    spot_collection: Duration = timedelta(hours=120)
    """2.1.1: collection at the overseas warehouse within this time of the order."""
    stockout_contact: Duration = timedelta(hours=48)
    """3.2.2: contact the consumer within this time of the order when out of stock."""
    cancellation_review: Duration = timedelta(hours=24)
    """2.2.3 / 2.3.2: review a consumer's cancellation request within this time."""
    customs_refund: Duration = timedelta(hours=24)
    """2.3.1: refund within this time of a failed customs clearance."""
    special_goods_unit: Duration = timedelta(hours=1)
    """The unit of an item's `ship_within_hours` (an hour; scaled down in the demo policy)."""
    trace_after_shipping: Duration = timedelta(hours=24)
    """3.3(1): a filled-in waybill must show a logistics trace within this time."""
    trace_gap: Duration = timedelta(hours=72)
    """3.3(2): after collection, the trace must update at least this often until delivery."""


class Points(_Frozen):
    general: int = Field(ge=0)
    serious: int = Field(ge=0)


def _default_warning_leads() -> dict[str, tuple[timedelta, ...]]:
    return {
        "collection_overdue": (timedelta(hours=24), timedelta(hours=6)),
        "cancellation_review_overdue": (timedelta(hours=4),),
        "stockout_contact_overdue": (timedelta(hours=12),),
        "ipr_response_overdue": (timedelta(hours=24),),
    }


def _default_points() -> dict[str, Points]:
    return {
        "out_of_stock": Points(general=4, serious=8),
        "false_delivery": Points(general=12, serious=25),
        "wrong_carrier": Points(general=2, serious=4),
        "refusal": Points(general=8, serious=8),
        "shortage": Points(general=2, serious=8),
    }


def _default_waybill_formats() -> dict[str, str]:
    return {"JD_LOGISTICS": r"^(JD|JDV[A-Z])[0-9A-Z]{4,20}$"}


class Announcement(_Frozen):
    """A special period (2.1.3): orders created in [applies_from, applies_until) ship within
    `ship_within_hours` instead of the spot limit."""

    announcement_id: str
    published_at: AwareDatetime
    applies_from: AwareDatetime
    applies_until: AwareDatetime
    ship_within_hours: float

    def covers(self, created_at: datetime) -> bool:
        return self.applies_from <= created_at < self.applies_until


class ClockSpec(_Frozen):
    """How long a working-time clock runs, on which calendar of the policy's `calendars`."""

    calendar: str = "elapsed"
    length: Duration
    """Working time on the calendar: '2d' is two working days on a `working_days` calendar,
    '24h' twenty-four open hours on a `business_hours` one."""


def _default_calendars() -> dict[str, Elapsed | WorkingDays | BusinessHours]:
    return {
        "elapsed": Elapsed(),
        "hk_working_days": WorkingDays(timezone="Asia/Hong_Kong", region="HK"),
        "cs_hours": BusinessHours(
            timezone="America/New_York", windows=(Window(opens="sun 21:00", closes="fri 06:00"),)
        ),
    }


def _default_clocks() -> dict[str, ClockSpec]:
    return {
        "ipr_response_overdue": ClockSpec(calendar="hk_working_days", length=timedelta(days=2)),
        "ipr_review_overdue": ClockSpec(calendar="hk_working_days", length=timedelta(days=10)),
        "cs_reply_overdue": ClockSpec(calendar="cs_hours", length=timedelta(hours=24)),
        "return_window_closed": ClockSpec(calendar="elapsed", length=timedelta(days=30)),
    }


class Threshold(_Frozen):
    points: int = Field(gt=0)
    measure: str


def _default_thresholds() -> tuple[Threshold, ...]:
    return (
        Threshold(points=12, measure="warning"),
        Threshold(points=24, measure="unshelve_commodities"),
        Threshold(points=48, measure="store_removal_review"),
    )


class Policy(_Frozen):
    name: str = "default"
    effective_from: Annotated[AwareDatetime, AfterValidator(lambda moment: moment.astimezone(UTC))]
    """In UTC, like every event time: comparing datetimes of two time zones costs 20 times
    more, and every reconcile asks which version was in force."""
    limits: Limits = Limits()
    repeat_window: Duration = timedelta(days=30)
    """Chapter III severity: a second violation of a category within this window is serious."""
    points: dict[str, Points] = Field(default_factory=_default_points)
    """Chapter III, per category: general / serious. For `shortage` the platform judges the
    severity: slight cases take the general points, capped per merchant per week."""
    repeat_windows: dict[str, Duration] = Field(default_factory=dict)
    """Per-category overrides of `repeat_window`."""
    allowed_carriers: tuple[str, ...] = ("JD_LOGISTICS",)
    """2.1: Shopify merchants ship with JD Logistics only."""
    waybill_formats: dict[str, str] = Field(default_factory=_default_waybill_formats)
    """3.3(3): a waybill number valid for each carrier (a regular expression)."""
    shortage_weekly_cap: int = Field(default=8, ge=0)
    """Chapter III: slight shortages cost at most this many points per merchant per week."""
    standing_window: Duration = timedelta(days=365)
    """A merchant's standing: the points of violations within this rolling window."""
    standing_thresholds: tuple[Threshold, ...] = Field(default_factory=_default_thresholds)
    """Point totals that trigger a platform measure; crossing one raises an escalation."""
    trace_checks: bool = True
    """3.3(1)/(2) judge the absence of logistics traces: turn them off only where the producer
    does not feed `logistics.tracked` (every order would otherwise look falsely delivered)."""
    platform_timezone: str = "Asia/Shanghai"
    """The time zone the platform's weeks are counted in."""
    warning_leads: dict[str, tuple[Duration, ...]] = Field(default_factory=_default_warning_leads)
    """Pre-breach warnings: how long before each rule's deadline the merchant is warned."""

    calendars: dict[str, Calendar] = Field(default_factory=_default_calendars)
    """Named calendars for working-time clocks (merged over the defaults: `elapsed`,
    `hk_working_days`, `cs_hours`)."""
    clocks: dict[str, ClockSpec] = Field(default_factory=_default_clocks)
    """Working-time clocks by rule id (IPR, customer service, returns), merged over the
    defaults."""

    @field_validator("calendars", mode="before")
    @classmethod
    def _calendars_over_defaults(cls, given: Any) -> Any:
        if isinstance(given, dict):
            return {**_default_calendars(), **given}
        return given

    @field_validator("clocks", mode="before")
    @classmethod
    def _clocks_over_defaults(cls, given: Any) -> Any:
        if isinstance(given, dict):
            return {**_default_clocks(), **given}
        return given

    @model_validator(mode="after")
    def _clocks_name_known_calendars(self) -> Policy:
        for rule, spec in self.clocks.items():
            calendar = self.calendars.get(spec.calendar)
            if calendar is None:
                raise ValueError(f"clocks.{rule}.calendar: no calendar named {spec.calendar!r}")
            if isinstance(calendar, WorkingDays) and spec.length % timedelta(days=1):
                raise ValueError(
                    f"clocks.{rule}.length: working days come whole, not {spec.length}"
                )
        return self

    @property
    def working_time_rules(self) -> frozenset[str]:
        """Rules whose clocks run on a working-time calendar (not `elapsed`): a declared
        closure or an edited calendar re-judges them."""
        return frozenset(
            rule
            for rule, spec in self.clocks.items()
            if not isinstance(self.calendars[spec.calendar], Elapsed)
        )

    def deadline(self, rule: str, start: datetime) -> Timed:
        """When the working-time clock `rule` started at `start` is due, closures included."""
        spec = self.clocks[rule]
        calendar = self.calendars[spec.calendar]
        return due_after(start, spec.length, spec.calendar, calendar, self.closures)

    @field_validator("points", mode="before")
    @classmethod
    def _over_the_defaults(cls, given: Any) -> Any:
        """A policy file lists the categories it changes; the others keep the table's points."""
        if isinstance(given, dict):
            return {**_default_points(), **given}
        return given

    def repeat_window_for(self, category: str) -> timedelta:
        return self.repeat_windows.get(category, self.repeat_window)

    def points_for(self, category: str, serious: bool) -> int:
        scale = self.points[category]
        return scale.serious if serious else scale.general

    def spot_limit_for(self, created_at: datetime) -> timedelta:
        """2.1.3: an announced special period's limit for orders created in it (the latest
        announcement wins where they overlap); else 2.1.1's spot limit."""
        if not self.announcements:
            return self.limits.spot_collection  # asked for every order at every reconcile
        covering = [a for a in self.announcements if a.covers(created_at)]
        if not covering:
            return self.limits.spot_collection
        latest = max(covering, key=lambda a: (a.published_at, a.announcement_id))
        return self.special_goods_limit(latest.ship_within_hours)

    def special_goods_limit(self, ship_within_hours: float) -> timedelta:
        return self.limits.special_goods_unit * ship_within_hours

    announcements: tuple[Announcement, ...] = ()
    """The special periods announced so far (state, not file data: the runtime adds them)."""
    closures: tuple[Closure, ...] = ()
    """Platform-declared closures that pause working-time clocks (state, like announcements)."""
    earlier: tuple[Policy, ...] = ()
    """Versions this one replaced (4.2), newest first: conduct before this version's
    `effective_from` is judged by the version then in force (4.1)."""

    def in_force_at(self, when: datetime) -> bool:
        return when >= self.effective_from

    def version_for(self, created_at: datetime | None) -> Policy:
        """4.1: an order is judged by the rules in force when it was created."""
        if created_at is None or self.in_force_at(created_at):
            return self
        for version in self.earlier:
            if version.in_force_at(created_at):
                return version
        return self.earlier[-1] if self.earlier else self

    def superseding(self, older: Policy) -> Policy:
        """This version, with `older` (and its own history) as the versions before it."""
        history = sorted((older, *older.earlier), key=lambda p: p.effective_from, reverse=True)
        flat = tuple(version.model_copy(update={"earlier": ()}) for version in history)
        return self.model_copy(update={"earlier": flat})
