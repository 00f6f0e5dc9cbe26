"""The check task: when a deadline's time comes, re-judge its order from current state.

A few lines only: decode the references, hand them to the service layer, re-schedule any that
arrived early (clock skew between hosts). Idempotent: a redelivered or duplicated task finds the
deadline already fired and does nothing; database constraints back that up.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

import structlog
from celery import Task
from celery.signals import worker_init, worker_process_init
from sqlalchemy.exc import DBAPIError

from store.base import DueDeadline
from tasks.app import app
from worker.service.bootstrap import App, bootstrap
from worker.timers.firing import decode_refs, encode_refs, fire_due

log = structlog.get_logger("slatimer.tasks")


@cache
def runtime() -> App:
    """One composition root per worker process, built on first use (never at import)."""
    return bootstrap()


@worker_init.connect  # type: ignore[untyped-decorator]
def _load_before_fork(**_: Any) -> None:
    """Build the composition root (settings, policy files, calendars) in the worker's main
    process, before the pool forks: every child inherits it, so a child's first deadline is not
    late by the policy load (~0.5 s on a loaded machine, enough to miss a 200 ms warning)."""
    runtime()


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _connect_in_child(**_: Any) -> None:
    """Each child gets connections of its own (none inherited across the fork) and opens its
    first one now rather than at its first deadline. Best effort: the task connects anyway."""
    engine = runtime().engine
    engine.dispose(close=False)
    try:
        with engine.connect():
            pass
    except DBAPIError as error:
        log.warning("database not reachable at child start", error=str(error)[:300])


@app.task(  # type: ignore[untyped-decorator]
    name="slatimer.fire_deadlines",
    bind=True,
    autoretry_for=(DBAPIError,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=20,  # then the dispatcher re-sends it after redispatch_grace
)
def fire_deadlines(self: Task[Any, Any], refs: list[list[str]]) -> int:
    deadlines = decode_refs(refs)
    services = runtime()
    fired, early = fire_due(
        deadlines,
        services.uow,
        services.clock,
        services.policy,
        set_based=services.settings.timer_set_based,
    )
    if early:
        self.apply_async(args=[encode_refs(early)], eta=max(d.due_at for d in early))
    return fired


def publish_deadlines(deadlines: list[DueDeadline], eta: datetime) -> None:
    """The dispatcher's `Publish`: one check task for a group of deadlines, due at `eta`."""
    fire_deadlines.apply_async(args=[encode_refs(deadlines)], eta=eta)
