"""The check task: when a deadline's time comes, re-judge its order from current state.

A few lines only: decode the references, hand them to the service layer, re-schedule any that
arrived early (clock skew between hosts). Idempotent: a redelivered or duplicated task finds the
deadline already fired and does nothing; database constraints back that up.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import structlog
from celery import Task
from sqlalchemy.exc import DBAPIError

from tasks.app import app
from worker.bootstrap import App, bootstrap
from worker.timers import decode_refs, encode_refs, fire_due

log = structlog.get_logger("slatimer.tasks")


@cache
def runtime() -> App:
    """One composition root per worker process, built on first use (never at import)."""
    return bootstrap()


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
