"""Outcomes: what a breached obligation becomes (violation or escalation), points, retractions.

`plan_reconciliation` compares what the facts say is breached *now* with what was already
recorded, and returns what to raise and what to withdraw. It is the single decision the
runtime and `slatimer replay` both run, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from models.policy import Threshold
from models.rules import RULES, Obligation, Warning

JUDGED = frozenset(RULES)
"""Rules judged from an order's facts; others (standing thresholds) are never withdrawn here."""

OutcomeKind = Literal["violation", "escalation", "retraction", "warning"]
Severity = Literal["general", "serious", "slight"]
"""general/serious by the repeat window; slight/serious as the platform judged a complaint."""
OutcomeKey = tuple[str, str, str, datetime]
"""(kind, rule, subject, at): an outcome's identity within its order."""


@dataclass(frozen=True)
class Recorded:
    """A violation or escalation already in the store for one order."""

    kind: Literal["violation", "escalation", "warning"]
    rule: str
    subject: str
    category: str | None
    clause: str
    at: datetime
    severity: Severity | None
    points: int | None
    retracted: bool = False

    @property
    def key(self) -> OutcomeKey:
        return (self.kind, self.rule, self.subject, self.at)


@dataclass(frozen=True)
class Withdrawal:
    outcome: Recorded
    reason: str


@dataclass(frozen=True)
class Plan:
    to_raise: list[Obligation] = field(default_factory=list)
    to_withdraw: list[Withdrawal] = field(default_factory=list)
    to_warn: list[Warning] = field(default_factory=list)


def key_of(obligation: Obligation) -> OutcomeKey:
    return (obligation.rule.kind, obligation.rule.id, obligation.subject, obligation.due_at)


def warning_key(warning: Warning) -> OutcomeKey:
    return ("warning", warning.obligation.rule.id, warning.obligation.subject, warning.due_at)


def breached_by(obligations: Iterable[Obligation], now: datetime) -> list[Obligation]:
    """The obligations whose deadline has passed unmet as of `now`, earliest first."""
    due = [o for o in obligations if o.breached and o.due_at <= now]
    return sorted(due, key=lambda o: (o.due_at, o.rule.id, o.subject))


def plan_reconciliation(
    current: Sequence[Obligation],
    now: datetime,
    recorded: Sequence[Recorded],
    warnings: Sequence[Warning] = (),
) -> Plan:
    """Decide what to raise and withdraw so the record matches the facts as of `now`.

    - A standing outcome no longer breached (late evidence, a moved deadline) is withdrawn.
    - A breach not yet recorded is raised, unless its key was recorded before (an outcome
      withdrawn once is never raised again) or its category already holds a standing violation
      for this order (at most one violation per order per category, Chapter III).
    - That one violation is the category's earliest breach: a standing violation due after a
      breach learnt of only now (evidence that reached the runtime late, e.g. a stock-out
      declared before the collection deadline but received after it) is withdrawn and the
      earlier breach raised instead, as replay, which knows every fact in time, would have it.
    - A pre-breach warning whose time has come is sent once, while its obligation is open.
    """
    breached = breached_by(current, now)
    expected = {key_of(o) for o in breached}
    standing = [r for r in recorded if not r.retracted and r.kind != "warning" and r.rule in JUDGED]
    withdrawals = [
        Withdrawal(r, _withdrawal_reason(r, current)) for r in standing if r.key not in expected
    ]
    kept = [r for r in standing if r.key in expected]
    known_keys = {r.key for r in recorded}
    holders: dict[str | None, Recorded | Obligation] = {
        r.category: r for r in kept if r.kind == "violation"
    }
    to_raise = []
    for obligation in breached:  # earliest first
        if key_of(obligation) in known_keys:
            continue
        if obligation.rule.kind == "violation":
            holder = holders.get(obligation.rule.category)
            if isinstance(holder, Recorded) and obligation.due_at < holder.at:
                withdrawals.append(Withdrawal(holder, _superseded(obligation)))
            elif holder is not None:
                continue
            holders[obligation.rule.category] = obligation
        to_raise.append(obligation)
    return Plan(to_raise, withdrawals, _warnings_due(warnings, now, known_keys))


def _superseded(earlier: Obligation) -> str:
    return (
        f"superseded by the earlier breach {earlier.rule.id} due {iso(earlier.due_at)} "
        "(one violation per order and category, Chapter III)"
    )


def crossed_thresholds(before: int, after: int, thresholds: Iterable[Threshold]) -> list[Threshold]:
    """The standing thresholds a merchant's points just reached (before < t <= after)."""
    return [t for t in thresholds if before < t.points <= after]


def _warnings_due(
    warnings: Sequence[Warning], now: datetime, known_keys: set[OutcomeKey]
) -> list[Warning]:
    """Warnings whose time has come, for obligations not met by then and not yet breached now
    (a breach says more than a warning); each once. A sent warning is never withdrawn."""
    due = [  # the time first: most warnings are not due yet
        w
        for w in warnings
        if w.due_at <= now < w.obligation.due_at and w.breached and warning_key(w) not in known_keys
    ]
    return sorted(due, key=lambda w: (w.due_at, w.obligation.rule.id, w.obligation.subject))


def _withdrawal_reason(outcome: Recorded, current: Sequence[Obligation]) -> str:
    same = [o for o in current if (o.rule.id, o.subject) == (outcome.rule, outcome.subject)]
    if not same:
        return "the obligation no longer applies"
    obligation = same[0]
    if obligation.met_at is not None and obligation.met_at <= outcome.at:
        return f"met on time by event {obligation.met_by} at {iso(obligation.met_at)}"
    return f"deadline moved to {iso(obligation.due_at)}"


def repeat_window(at: datetime, window: timedelta) -> tuple[datetime, datetime]:
    """Chapter III: a violation is serious when the merchant already has one of the same
    category with `at` in the preceding window (default 30 days): [at - window, at)."""
    return (at - window, at)


def iso_week(at: datetime, timezone: str) -> tuple[datetime, datetime]:
    """The ISO week (Monday 00:00 to the next) containing `at`, in the platform's time zone."""
    zone = ZoneInfo(timezone)
    local = at.astimezone(zone)
    monday = (local - timedelta(days=local.weekday())).date()
    start = datetime.combine(monday, time(0), tzinfo=zone)
    return start.astimezone(UTC), (start + timedelta(days=7)).astimezone(UTC)


def iso(moment: datetime) -> str:
    """RFC 3339 in UTC with a 'Z', the one timestamp format slatimer prints."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class LedgerEntry:
    """A line of a merchant's points ledger, tied to the outcome it charges or reverses."""

    merchant_id: str
    order_id: str
    rule: str
    subject: str
    outcome_at: datetime
    entry: Literal["charge", "reversal"]
    points: int
    at: datetime


@dataclass(frozen=True)
class Outcome:
    """One line of `slatimer replay` and one alert-worthy record of the runtime."""

    kind: OutcomeKind
    rule: str
    order_id: str
    merchant_id: str | None
    at: datetime
    clause: str
    category: str | None = None
    severity: Severity | None = None
    points: int | None = None
    subject: str = ""
    evidence: str | None = None
    deadline: datetime | None = None
    """The deadline concerned: the one breached, warned of, or (for a retraction) withdrawn."""
    capped: bool | None = None
    """A slight shortage past the weekly points cap: recorded, with no points (Chapter III)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rule": self.rule,
            "category": self.category,
            "order_id": self.order_id,
            "merchant_id": self.merchant_id,
            "at": iso(self.at),
            "severity": self.severity,
            "points": self.points,
            "clause": self.clause,
            "subject": self.subject or None,
            "evidence": self.evidence,
            "deadline": iso(self.deadline) if self.deadline else None,
            "capped": self.capped,
        }

    def as_recorded(self) -> Recorded:
        """How a store keeps it: what later reconciliations of its order look at."""
        assert self.kind in ("violation", "escalation", "warning")
        return Recorded(
            kind=self.kind,
            rule=self.rule,
            subject=self.subject,
            category=self.category,
            clause=self.clause,
            at=self.at,
            severity=self.severity,
            points=self.points,
        )
