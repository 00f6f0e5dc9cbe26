"""`slatimer dispatcher`: the loop that turns due deadline rows into Celery ETA tasks.

The loop is given how to send (`publish`, tasks.timers.publish_deadlines in the runtime) and
what else to do each pass (the alert relay): it imports neither Celery nor the alerts package.
Run one or more replicas; claims use SELECT … FOR UPDATE SKIP LOCKED, so two never send the
same deadline in one pass. Database or broker trouble: back off and try again, never exit.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from types import FrameType

import orjson
import structlog

from models.policy import Policy
from store.base import UnitOfWork
from store.sql.migrate import server_warnings
from worker.process.backoff import compute_backoff
from worker.service.bootstrap import App
from worker.service.handlers import recalendar
from worker.timers.firing import Publish, TimerPolicy, dispatch_once

log = structlog.get_logger("slatimer.dispatcher")


def timer_policy(app: App) -> TimerPolicy:
    settings = app.settings
    return TimerPolicy(
        horizon=timedelta(seconds=settings.timer_horizon),
        batch=settings.dispatch_batch,
        redispatch_grace=timedelta(seconds=settings.redispatch_grace),
        group_window=timedelta(seconds=settings.timer_group_window),
        lanes=settings.timer_lanes,
    )


class CalendarWatch:
    """Notices when the policy's calendars change (a file edited: a holiday added, hours
    moved) and re-judges every open working-time clock, so the change reaches open items and
    not only new ones. The first check after a start sweeps too (a change made while down)."""

    RETRY_AFTER = 30.0
    """Seconds before a failed sweep is tried again (it must not hold up dispatching)."""

    def __init__(self) -> None:
        self.seen: str | None = None
        self.retry_at = 0.0

    def check_safely(self, policy: Policy, uow: UnitOfWork, now: datetime) -> None:
        """`check`, but a failure is logged and retried later: due deadlines go out meanwhile."""
        if time.monotonic() < self.retry_at:
            return
        try:
            self.check(policy, uow, now)
        except Exception:  # noqa: BLE001 - an outage or a bad calendar: dispatch goes on
            self.retry_at = time.monotonic() + self.RETRY_AFTER
            log.exception("calendar sweep failed; retrying later", retry_s=self.RETRY_AFTER)

    def check(self, policy: Policy, uow: UnitOfWork, now: datetime) -> int | None:
        """The number of streams re-judged, or None when the calendars did not change."""
        fingerprint = orjson.dumps(
            {name: calendar.model_dump(mode="json") for name, calendar in policy.calendars.items()},
            option=orjson.OPT_SORT_KEYS,
        ).decode()
        if fingerprint == self.seen:
            return None
        with uow:
            streams = uow.deadlines.open_orders(policy.working_time_rules)
            made = recalendar(uow, now, policy)
            uow.commit()
        self.seen = fingerprint
        log.info("calendars in force checked", open_streams=len(streams), outcomes=len(made))
        return len(streams)


def _say_server_warnings(app: App) -> None:
    """Once per start: the dispatcher is the one role that always runs, once."""
    try:
        warnings = server_warnings(app.engine)
    except Exception as error:  # noqa: BLE001 - the database may be away: the loop copes
        log.warning("database server not checked", error=repr(error)[:300])
        return
    for warning in warnings:
        log.warning("database server", problem=warning)


def run_dispatcher(
    app: App,
    publish: Publish,
    each_pass: Sequence[Callable[[], object]] = (),
    stop: threading.Event | None = None,
) -> None:
    """Dispatch until stopped (SIGTERM/SIGINT or `stop`); a full pass is repeated at once.
    `each_pass` runs after every pass (the alert relay); each step handles its own errors."""
    stop = stop or _stop_on_signals()
    timers = timer_policy(app)
    calendars = CalendarWatch()
    failures = 0
    _say_server_warnings(app)
    log.info("dispatcher started", horizon_s=app.settings.timer_horizon)
    while not stop.is_set():
        try:
            calendars.check_safely(app.policy, app.uow(), app.clock.now())
            claimed = dispatch_once(app.uow(), app.clock.now(), timers, publish)
            for step in each_pass:
                step()
            failures = 0
        except Exception:  # noqa: BLE001 - any outage: log, back off, go on
            failures += 1
            log.exception("dispatch pass failed", attempt=failures)
            stop.wait(compute_backoff(failures))
            continue
        if claimed < timers.batch:
            stop.wait(app.settings.dispatch_interval)
    log.info("dispatcher stopped")


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop
