"""The policy: every number the rules use, loaded from a policy file (see config/policies/).

Clause numbers are facts of the rulebook and live with the rules; limits, windows and points are
policy data so an announced rule change (4.2) or a demo with second-scale limits needs no code.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

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


class Points(_Frozen):
    general: int = Field(ge=0)
    serious: int = Field(ge=0)


def _default_warning_leads() -> dict[str, tuple[timedelta, ...]]:
    return {
        "collection_overdue": (timedelta(hours=24), timedelta(hours=6)),
        "cancellation_review_overdue": (timedelta(hours=4),),
        "stockout_contact_overdue": (timedelta(hours=12),),
    }


def _default_points() -> dict[str, Points]:
    return {"out_of_stock": Points(general=4, serious=8)}


class Policy(_Frozen):
    name: str = "default"
    effective_from: AwareDatetime
    limits: Limits = Limits()
    repeat_window: Duration = timedelta(days=30)
    """Chapter III severity: a second violation of a category within this window is serious."""
    points: dict[str, Points] = Field(default_factory=_default_points)
    warning_leads: dict[str, tuple[Duration, ...]] = Field(default_factory=_default_warning_leads)
    """Pre-breach warnings: how long before each rule's deadline the merchant is warned."""

    def points_for(self, category: str, serious: bool) -> int:
        scale = self.points[category]
        return scale.serious if serious else scale.general

    def special_goods_limit(self, ship_within_hours: float) -> timedelta:
        return self.limits.special_goods_unit * ship_within_hours

    def in_force_at(self, when: datetime) -> bool:
        return when >= self.effective_from
