"""Service layer: the two things that happen to an order — an event arrives, a clock fires.

Both end in `reconcile_order`, which re-judges the order from its facts at `now` and records the
difference. Handlers run inside a transaction the caller owns (one event, or one batch with a
savepoint per message), so the caller decides when to commit.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Literal

import structlog

from models.calendars import Closure
from models.events import (
    AnnouncementPublished,
    ClosureDeclared,
    ContractError,
    Event,
    body_digest,
)
from models.order import OrderState, apply
from models.outcomes import (
    LedgerEntry,
    Outcome,
    Withdrawal,
    crossed_thresholds,
    iso,
    iso_week,
    plan_reconciliation,
    repeat_window,
)
from models.policy import Announcement, Policy
from models.rules import VIOLATION_RULES, Obligation, Warning, obligations, warnings
from store.base import DueDeadline, UnitOfWork

log = structlog.get_logger("slatimer.services")


class DuplicateEventId(ContractError):
    """An `event_id` already used for a different body: the idempotency key was reused."""

    def __init__(self, event_id: str) -> None:
        super().__init__("event_id", f"{event_id!r} was already used for a different event")


def record_event(event: Event, uow: UnitOfWork, now: datetime, policy: Policy) -> list[Outcome]:
    """Store the event's facts and re-judge its order. A repeated delivery changes nothing."""
    if isinstance(event, AnnouncementPublished):
        return publish_announcement(event, uow, now, policy)
    if isinstance(event, ClosureDeclared):
        return declare_closure(event, uow, now, policy)
    state = uow.orders.lock(event.order_id)  # first: a concurrent duplicate waits here
    if not _first_delivery(event, uow, now):
        return []
    state = apply(state, event)
    uow.orders.save(state)
    return reconcile_order(state, uow, now, policy)


def publish_announcement(
    event: AnnouncementPublished, uow: UnitOfWork, now: datetime, policy: Policy
) -> list[Outcome]:
    """2.1.3: a special period changes the limit of every order created in it, open ones
    included — re-judge each now: deadlines and warnings move, a passed deadline now extended
    withdraws its violation."""
    if not _first_delivery(event, uow, now):
        return []
    uow.announcements.add(
        Announcement(
            announcement_id=event.announcement_id,
            published_at=event.occurred_at,
            applies_from=event.applies_from,
            applies_until=event.applies_until,
            ship_within_hours=event.ship_within_hours,
        )
    )
    made: list[Outcome] = []
    for order_id in uow.orders.created_between(event.applies_from, event.applies_until):
        made += reconcile_order(uow.orders.lock(order_id), uow, now, policy)
    return made


def declare_closure(
    event: ClosureDeclared, uow: UnitOfWork, now: datetime, policy: Policy
) -> list[Outcome]:
    """A platform-declared closure pauses working-time clocks. Every stream with such a clock
    due after the closure starts — open, fired or met — is re-judged now, so the outcome does
    not depend on whether the closure arrived before or after the clock's evidence. A later
    declaration of the same `closure_id` amends it; an earlier one arriving late changes
    nothing."""
    if not _first_delivery(event, uow, now):
        return []
    closure = Closure.model_validate(
        {
            **{name: getattr(event, name) for name in Closure.model_fields if hasattr(event, name)},
            "declared_at": event.occurred_at,
            "declared_by": event.event_id,
        }
    )
    previous = next((c for c in uow.closures.all() if c.closure_id == closure.closure_id), None)
    if previous is not None and not closure.supersedes(previous):
        return []
    unknown = sorted(set(closure.calendars) - set(policy.calendars))
    if unknown:
        log.warning(
            "closure names unknown calendars", closure_id=closure.closure_id, unknown=unknown
        )
    uow.closures.add(closure)
    since = min(closure.starts_at, previous.starts_at) if previous else closure.starts_at
    made: list[Outcome] = []
    for order_id in uow.deadlines.due_since(policy.working_time_rules, since):
        made += reconcile_order(uow.orders.lock(order_id), uow, now, policy)
    return made


def recalendar(uow: UnitOfWork, now: datetime, policy: Policy) -> list[Outcome]:
    """Re-judge every stream with an open working-time clock against the calendars in force
    now (an edited calendar in the policy file reaches open items, not only new ones)."""
    made: list[Outcome] = []
    for order_id in uow.deadlines.open_orders(policy.working_time_rules):
        made += reconcile_order(uow.orders.lock(order_id), uow, now, policy)
    return made


def _first_delivery(event: Event, uow: UnitOfWork, now: datetime) -> bool:
    """Record the event in the inbox; False for a harmless repeat, an error for a reused id."""
    digest = body_digest(event)
    seen = uow.inbox.digest_of(event.event_id)
    if seen == digest:
        return False
    if seen is not None:
        raise DuplicateEventId(event.event_id)
    uow.inbox.add(event, digest, received_at=now)
    return True


def fire_deadline(
    deadline: DueDeadline, uow: UnitOfWork, now: datetime, policy: Policy
) -> list[Outcome]:
    """A clock's time came: re-judge the order, unless the clock was met or moved meanwhile.

    A violation clock takes its merchant's lock before the order's: grading it may fire the
    merchant's other overdue clocks first (`_catch_up`), and a worker holding the merchant
    then never waits for an order another worker holds while waiting for the merchant."""
    if deadline.rule in VIOLATION_RULES:
        merchant_id = uow.orders.merchant_of(deadline.order_id)
        if merchant_id is not None:
            uow.orders.lock_merchant(merchant_id)
    state = uow.orders.lock(deadline.order_id)  # a redelivered twin waits here
    if not uow.deadlines.is_due(deadline):
        return []
    return reconcile_order(state, uow, now, policy)


def reconcile_order(
    state: OrderState,
    uow: UnitOfWork,
    now: datetime,
    policy: Policy,
    as_of: datetime | None = None,
) -> list[Outcome]:
    """Make the record match the facts as of `now`: raise breaches, withdraw disproved ones.

    `as_of` judges the order as of an earlier moment — a clock of its merchant fired late, in
    due order, by `_catch_up` — as a punctual timer would have: breaches due by then, its
    later clocks left open to fire in their turn. `now` stays the wall clock: alerts are
    created now, and a warning whose deadline has passed by now is not sent."""
    policy = _in_force(state, uow, policy)
    judged_at = as_of or now
    current = obligations(state, policy)
    ahead = warnings(current, policy)
    plan = plan_reconciliation(current, judged_at, uow.outcomes.for_order(state.order_id), ahead)
    made = [_warn(state, w, uow, now) for w in plan.to_warn if now < w.obligation.due_at]
    made += [_withdraw(state, w, uow, now) for w in plan.to_withdraw]
    for obligation in plan.to_raise:
        if as_of is None:  # the guard: a caught-up clock catches nothing up itself
            made += _catch_up(state, obligation, uow, now, policy)
        raised = _raise(state, obligation, uow, now, policy)
        made += [raised, *_standing_escalations(raised, uow, now, policy)]
    uow.deadlines.sync(state.order_id, [*current, *ahead], judged_at)
    return made


def _in_force(state: OrderState, uow: UnitOfWork, policy: Policy) -> Policy:
    """The policy version that judges the order, with the stored announcements and closures."""
    return _judging(policy.version_for(state.opened_at), policy, uow)


def _catch_up(
    state: OrderState, obligation: Obligation, uow: UnitOfWork, now: datetime, policy: Policy
) -> list[Outcome]:
    """Chapter III grades a violation against the merchant's earlier ones (the repeat window,
    the standing thresholds), so the merchant's record must be written in due order whatever
    order its clocks fire in (two workers, every overdue clock at once after an outage). Under
    the merchant's lock, fire the merchant's other violation clocks that come before this one
    (`DueDeadline.rank`, as replay orders them), each as of its own due time; they are all due
    by now, since this one is.

    One level only: the list is complete and in due order, so a caught-up clock has nothing
    before it left to catch up (`reconcile_order`'s `as_of` guard). Clocks of one order are
    already raised in due order by its own reconciliation."""
    merchant_id = state.merchant_id
    if obligation.rule.kind != "violation" or merchant_id is None:
        return []
    uow.orders.lock_merchant(merchant_id)
    this = (obligation.due_at, state.order_id, obligation.rule.id, obligation.subject)
    earlier = uow.deadlines.open_of_merchant(merchant_id, VIOLATION_RULES, obligation.due_at)
    made: list[Outcome] = []
    for deadline in earlier:
        if deadline.order_id == state.order_id or deadline.rank >= this:
            continue
        other = uow.orders.lock(deadline.order_id)
        if uow.deadlines.is_due(deadline):  # not met or fired meanwhile by another clock
            made += reconcile_order(other, uow, now, policy, as_of=deadline.due_at)
    return made


_JUDGING: dict[tuple[int, int], tuple[Policy, Policy, object, object, Policy]] = {}


def _judging(judged: Policy, current: Policy, uow: UnitOfWork) -> Policy:
    """The version judging an order, with the announcements and closures known so far and the
    calendars in force now. Built once per version and state of those, not per reconcile: the
    copy cost more than the rules it feeds (replay reconciles once or twice per event)."""
    announcements, closures = uow.announcements.all(), uow.closures.all()
    hit = _JUDGING.get((id(judged), id(current)))
    if hit and hit[:2] == (judged, current) and hit[2:4] == (announcements, closures):
        return hit[4]
    policy = judged.model_copy(
        update={
            "announcements": announcements,
            "closures": closures,
            # calendars say when the platform works, not how merchants must behave: the
            # ones in force now apply to every open clock, whichever version judges it
            "calendars": {**judged.calendars, **current.calendars},
        }
    )
    if len(_JUDGING) > 32:  # policy files reloaded many times: forget the old versions
        _JUDGING.clear()
    _JUDGING[(id(judged), id(current))] = (judged, current, announcements, closures, policy)
    return policy


def _warn(state: OrderState, warning: Warning, uow: UnitOfWork, now: datetime) -> Outcome:
    """Tell the merchant a deadline is near while it can still be met."""
    obligation = warning.obligation
    hours = warning.lead.total_seconds() / 3600
    outcome = Outcome(
        kind="warning",
        rule=obligation.rule.id,
        order_id=state.order_id,
        merchant_id=state.merchant_id,
        at=warning.due_at,
        clause=obligation.clause,
        category=obligation.rule.category,
        subject=obligation.subject,
        evidence=f"{hours:g} h before the deadline {iso(obligation.due_at)}",
        deadline=obligation.due_at,
    )
    uow.outcomes.record(outcome)
    uow.alerts.add(outcome, created_at=now)
    _log(outcome)
    return outcome


def _raise(
    state: OrderState, obligation: Obligation, uow: UnitOfWork, now: datetime, policy: Policy
) -> Outcome:
    rule = obligation.rule
    outcome = Outcome(
        kind=rule.kind,
        rule=rule.id,
        order_id=state.order_id,
        merchant_id=state.merchant_id,
        at=obligation.due_at,
        clause=obligation.clause,
        category=rule.category,
        subject=obligation.subject,
        deadline=obligation.due_at,
        evidence=obligation.evidence,
    )
    if rule.kind == "violation" and rule.category is not None:
        outcome = _graded(outcome, obligation, rule.category, uow, policy)
    uow.outcomes.record(outcome)
    uow.alerts.add(outcome, created_at=now)
    if outcome.points:
        uow.ledger.add(_ledger_entry(outcome, "charge", outcome.at, outcome.points))
    _log(outcome)
    return outcome


def _standing_escalations(
    outcome: Outcome, uow: UnitOfWork, now: datetime, policy: Policy
) -> list[Outcome]:
    """Chapter III measures: when a violation's points carry the merchant's rolling total over
    a threshold, escalate it (once per crossing; a later retraction does not withdraw it)."""
    if not outcome.points or outcome.points < 0 or outcome.merchant_id is None:
        return []
    total = uow.ledger.standing(
        outcome.merchant_id, outcome.at - policy.standing_window, outcome.at
    )
    made = []
    for threshold in crossed_thresholds(total - outcome.points, total, policy.standing_thresholds):
        escalation = Outcome(
            kind="escalation",
            rule="standing_threshold",
            order_id=outcome.order_id,
            merchant_id=outcome.merchant_id,
            at=outcome.at,
            clause="Chapter III",
            subject=threshold.measure,
            evidence=f"{total} points in the rolling window reach {threshold.points}",
            deadline=outcome.at,
        )
        uow.outcomes.record(escalation)
        uow.alerts.add(escalation, created_at=now)
        _log(escalation)
        made.append(escalation)
    return made


def _graded(
    outcome: Outcome, obligation: Obligation, category: str, uow: UnitOfWork, policy: Policy
) -> Outcome:
    """Chapter III: the points depend on whether this is a repeat within the window — or, for
    an upheld complaint, on the severity the platform judged."""
    assert outcome.merchant_id is not None
    if obligation.severity is not None:
        return _platform_graded(outcome, obligation.severity, category, uow, policy)
    since, until = repeat_window(outcome.at, policy.repeat_window_for(category))
    serious = uow.outcomes.any_violation_between(outcome.merchant_id, category, since, until)
    return replace(
        outcome,
        severity="serious" if serious else "general",
        points=policy.points_for(category, serious),
    )


def _platform_graded(
    outcome: Outcome,
    severity: Literal["slight", "serious"],
    category: str,
    uow: UnitOfWork,
    policy: Policy,
) -> Outcome:
    """3.1 / Chapter III: serious 8 points; slight 2 per order, at most 8 per merchant per ISO
    week in the platform's time zone — further slight cases are recorded, capped, with 0."""
    assert outcome.merchant_id is not None
    if severity == "serious":
        return replace(outcome, severity="serious", points=policy.points_for(category, True))
    full = policy.points_for(category, False)
    since, until = iso_week(outcome.at, policy.platform_timezone)
    used = uow.outcomes.points_between(outcome.merchant_id, category, "slight", since, until)
    points = max(0, min(full, policy.shortage_weekly_cap - used))
    return replace(outcome, severity="slight", points=points, capped=points < full)


def _withdraw(state: OrderState, withdrawal: Withdrawal, uow: UnitOfWork, now: datetime) -> Outcome:
    """Late evidence disproved a breach: record a retraction and reverse its points."""
    withdrawn = withdrawal.outcome
    retraction = Outcome(
        kind="retraction",
        rule=withdrawn.rule,
        order_id=state.order_id,
        merchant_id=state.merchant_id,
        at=now,
        clause=withdrawn.clause,
        category=withdrawn.category,
        severity=withdrawn.severity,
        points=-withdrawn.points if withdrawn.points else None,
        subject=withdrawn.subject,
        evidence=f"withdraws the {withdrawn.kind} at {iso(withdrawn.at)}: {withdrawal.reason}",
        deadline=withdrawn.at,
    )
    uow.outcomes.withdraw(withdrawn, retraction)
    uow.alerts.add(retraction, created_at=now)
    if retraction.points:
        uow.ledger.add(_ledger_entry(retraction, "reversal", withdrawn.at, retraction.points))
    _log(retraction)
    return retraction


def _ledger_entry(
    outcome: Outcome, entry: Literal["charge", "reversal"], outcome_at: datetime, points: int
) -> LedgerEntry:
    assert outcome.merchant_id is not None
    return LedgerEntry(
        merchant_id=outcome.merchant_id,
        order_id=outcome.order_id,
        rule=outcome.rule,
        subject=outcome.subject,
        outcome_at=outcome_at,
        entry=entry,
        points=points,
        at=outcome.at,
    )


def _log(outcome: Outcome) -> None:
    log.info(
        outcome.kind,
        order_id=outcome.order_id,
        merchant_id=outcome.merchant_id,
        rule=outcome.rule,
        at=iso(outcome.at),
        points=outcome.points,
    )
