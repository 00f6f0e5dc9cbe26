"""The delivery task: a few lines over worker.alerts.delivery.deliver (load, POST, record).

No Celery retry: a failed attempt is rescheduled in the outbox itself (its backoff spans a
day, far beyond what a broker should hold); a task lost with its worker leaves the alert's
lease to run out, and the relay claims it again.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from tasks.app import app
from tasks.timers import runtime
from worker.alerts.delivery import AlertConfig, Delivery, deliver
from worker.alerts.webhooks import make_client


@cache
def delivery() -> Delivery:
    """One HTTP client and configuration per worker process, built on first use."""
    services = runtime()
    settings = services.settings
    client = make_client(settings.alert_connect_timeout, settings.alert_read_timeout)
    config = AlertConfig.from_settings(settings)
    return Delivery(engine=services.engine, clock=services.clock, config=config, client=client)


@app.task(name="slatimer.deliver_alert")  # type: ignore[untyped-decorator]
def deliver_alert(alert_id: str, attempt: int, lease: str) -> str:
    return deliver(delivery(), alert_id, attempt, datetime.fromisoformat(lease))


def publish_delivery(alert_id: str, attempt: int, lease: datetime) -> None:
    """The relay's `Publish`: one delivery task for a claimed attempt."""
    deliver_alert.apply_async(args=[alert_id, attempt, lease.isoformat()])
