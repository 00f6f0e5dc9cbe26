"""Alerts to merchants: the outbox relay (a step of the dispatcher loop) and the delivery
service behind the `slatimer.deliver_alert` Celery task. docs/alerts.md explains the design.

The relay claims due alerts (per order, in id order), leases them and sends one task each; the
task POSTs the stored body, signed, and records the result. Every alert keeps its `alert_id`
as `webhook-id` on every attempt, so a receiver de-duplicates; at-least-once, never lost.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import Engine

from config.settings import Settings
from models.clock import Clock
from store.sql.outbox import Alert, DueAlert, Merchant, SqlOutbox, outbox
from worker.alerts import webhooks
from worker.alerts.webhooks import Allow, Resolve, Response, Target, Unresolvable, UnsafeUrl

log = structlog.get_logger("slatimer.alerts")

Publish = Callable[[str, int, datetime], None]
"""Send the delivery task for a claim: (alert_id, attempt number, lease end)."""


@dataclass(frozen=True)
class AlertConfig:
    batch: int = 200
    lease: timedelta = timedelta(seconds=300)
    """How long a claimed alert is left to its task before it is claimed again."""
    no_endpoint_wait: timedelta = timedelta(seconds=60)
    retry_base: float = 30.0
    retry_cap: float = 43_200.0
    max_attempts: int = 10
    secret_grace: timedelta = timedelta(hours=24)
    allow: Allow = field(default_factory=Allow)

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig:
        return cls(
            batch=settings.alert_batch,
            lease=timedelta(seconds=settings.alert_lease),
            no_endpoint_wait=timedelta(seconds=settings.alert_no_endpoint_wait),
            retry_base=settings.alert_retry_base,
            retry_cap=settings.alert_retry_cap,
            max_attempts=settings.alert_max_attempts,
            secret_grace=timedelta(seconds=settings.webhook_secret_grace),
            allow=Allow.parse(settings.webhook_allow),
        )


# --- the relay ---------------------------------------------------------------------------


def relay_once(engine: Engine, now: datetime, config: AlertConfig, publish: Publish) -> int:
    """One pass: claim due alerts and send a task for each. Tasks are sent after the claim
    commits (a task never finds its alert unclaimed); a send that fails leaves the lease to
    run out, and the alert is claimed again."""
    with outbox(engine) as box:
        due = box.due(now, config.batch)
        sends = _sort_out(box, due, now, config)
    for alert in sends:
        publish(alert.alert_id, alert.attempts + 1, now + config.lease)
    return len(due)


def _sort_out(
    box: SqlOutbox, due: list[DueAlert], now: datetime, config: AlertConfig
) -> list[DueAlert]:
    """Lease what can go out; alerts of a merchant with no endpoint wait; a disabled
    endpoint's alerts are parked."""
    merchants = box.merchants({alert.merchant_id for alert in due})
    sends, waits, parked = [], [], []
    for alert in due:
        merchant = merchants.get(alert.merchant_id)
        if merchant is None or not merchant.webhook_url or not merchant.secret:
            waits.append(alert.id)
        elif not merchant.enabled:
            parked.append(alert.id)
        else:
            sends.append(alert)
    box.lease([alert.id for alert in sends], now + config.lease)
    box.postpone(waits, now + config.no_endpoint_wait)
    box.park(parked, "disabled", "endpoint disabled")
    return sends


def relay_step(engine: Engine, clock: Clock, settings: Settings, publish: Publish) -> int:
    """The dispatcher's alert step: never raises, so an alert problem cannot stop timers.
    `publish` sends the delivery task (tasks.alerts.publish_delivery in the runtime)."""
    try:
        return relay_once(engine, clock.now(), AlertConfig.from_settings(settings), publish)
    except Exception:  # noqa: BLE001 - logged; the next pass tries again
        log.exception("alert relay pass failed")
        return 0


# --- one delivery ------------------------------------------------------------------------


@dataclass
class Delivery:
    """What a delivery needs; built once per worker process (see tasks.alerts)."""

    engine: Engine
    clock: Clock
    config: AlertConfig
    client: httpx.Client
    resolve: Resolve = webhooks.system_resolve
    rng: random.Random = field(default_factory=random.Random)


def deliver(delivery: Delivery, alert_id: str, attempt: int, lease: datetime) -> str:
    """Send the claimed attempt of an alert and record what happened; returns the outcome's
    name. A task whose claim is no longer current (taken over, or already done) does nothing."""
    with outbox(delivery.engine) as box:
        alert = box.alert(alert_id)
        merchant = box.merchant(alert.merchant_id) if alert else None
    if alert is None or (alert.state, alert.attempts, alert.next_attempt_at) != (
        "pending",
        attempt,
        lease,
    ):
        return "stale"
    bound = log.bind(alert_id=alert_id, order_id=alert.order_id, merchant_id=alert.merchant_id)
    if merchant is None or not merchant.enabled or not merchant.webhook_url:
        return "no endpoint"  # the lease runs out and the relay sorts it out
    response = _attempt(delivery, alert, merchant)
    with outbox(delivery.engine) as box:
        result = record_response(box, alert, response, delivery)
    bound.info("alert attempt", attempt=attempt, status=response.status, result=result)
    return result


def _attempt(delivery: Delivery, alert: Alert, merchant: Merchant) -> Response:
    now = delivery.clock.now()
    assert merchant.webhook_url is not None
    try:
        target = webhooks.check_url(merchant.webhook_url, delivery.config.allow, delivery.resolve)
    except Unresolvable as error:
        return Response(None, error=webhooks.excerpt_of(str(error)))
    except UnsafeUrl as error:
        return Response(None, error=webhooks.excerpt_of(f"refused: {error}"), refused=True)
    return send(delivery.client, target, alert, merchant, now, delivery.config.secret_grace)


def send(
    client: httpx.Client,
    target: Target,
    alert: Alert,
    merchant: Merchant,
    now: datetime,
    grace: timedelta,
) -> Response:
    body = webhooks.encode_body(alert.body)
    keys = webhooks.signing_secrets(merchant, now, grace)
    headers = webhooks.signed_headers(alert.alert_id, body, keys, now)
    return webhooks.post(client, target, body, headers)


def record_response(box: SqlOutbox, alert: Alert, response: Response, delivery: Delivery) -> str:
    """`alert` as read at the start of this attempt (its claim: attempts, next_attempt_at)."""
    now = delivery.clock.now()
    attempt, claim = alert.attempts, (alert.attempts, alert.next_attempt_at)
    if response.refused:
        box.record(alert.alert_id, *claim, "failed", last_error=response.error)
        return "failed"
    verdict = "retry" if response.status is None else webhooks.classify(response.status)
    if verdict == "delivered":
        assert response.status is not None
        box.record_delivered(alert.alert_id, response.status, now)
        return "delivered"
    if verdict == "gone":
        reason = f"HTTP 410 Gone at {now.isoformat()}; `slatimer merchants enable` to resume"
        box.disable(alert.merchant_id, reason)
        return "disabled"
    values: dict[str, Any] = {"last_status": response.status, "last_error": response.error}
    if verdict == "failed" or attempt >= delivery.config.max_attempts:
        box.record(alert.alert_id, *claim, "failed", **values)
        return "failed"
    wait = next_wait(attempt, response, now, delivery.config, delivery.rng)
    box.record(alert.alert_id, *claim, "pending", next_attempt_at=now + wait, **values)
    return "retry"


def next_wait(
    attempt: int, response: Response, now: datetime, config: AlertConfig, rng: random.Random
) -> timedelta:
    """The jittered backoff, or longer if the receiver asked (Retry-After), never past the cap."""
    delay = webhooks.retry_delay(attempt, rng, config.retry_base, config.retry_cap)
    asked = webhooks.parse_retry_after(response.retry_after, now)
    if asked is not None:
        delay = max(delay, asked)
    return timedelta(seconds=min(delay, config.retry_cap))
