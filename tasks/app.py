"""The Celery application, configured deliberately (see docs/runtime.md for the why of each).

`celery -A tasks.app worker` and `celery -A tasks.app flower` find `app` here. Creating it reads
settings but connects to nothing; the worker connects when it starts.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

from config.settings import Settings


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options(settings),
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # JSON only: a pickle message is refused, never executed
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        # a task is acknowledged after it ran; a worker killed mid-task leaves it to redeliver
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # ETA tasks sit in worker memory until due: the dispatcher keeps them within the
        # horizon, and this caps how many one worker may hold
        "worker_prefetch_multiplier": 1,
        "worker_eta_task_limit": 10_000,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "task_time_limit": 300,
        "task_soft_time_limit": 240,
        "task_default_queue": settings.timer_queue,
        "task_routes": {
            "slatimer.fire_deadlines": {"queue": settings.timer_queue},
            "slatimer.deliver_alert": {"queue": settings.alert_queue},
        },
        "task_create_missing_queues": True,
        # Flower and monitoring see every task
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        # structlog writes JSON lines to stderr itself; Celery's default redirect would pass
        # each one through `logging` again, prefixed "[…: WARNING/ForkPoolWorker-1]" (not
        # JSON any more, and ~10% of a child's CPU in a wave, docs/bench.md)
        "worker_redirect_stdouts": False,
        "enable_utc": True,
        "timezone": "UTC",
    }


def transport_options(settings: Settings) -> dict[str, Any]:
    """Per broker: Redis needs a visibility timeout above horizon + grace; RabbitMQ publisher
    confirms; kombu's SQLAlchemy transport hands its options to create_engine, so none."""
    if settings.broker_url.startswith(("redis", "rediss")):
        return {"visibility_timeout": settings.visibility_timeout}
    if settings.broker_url.startswith(("amqp", "pyamqp")):
        return {"confirm_publish": True}
    return {}


def use_patched_redis_transport() -> None:
    """`redis://` and `rediss://` through tasks/kombu_redis.py (a worker survives a Redis
    crash instead of exiting); idempotent, connects to nothing."""
    for scheme in ("redis", "rediss"):
        TRANSPORT_ALIASES[scheme] = "tasks.kombu_redis:Transport"


def make_celery(settings: Settings | None = None) -> Celery:
    use_patched_redis_transport()
    celery = Celery("slatimer", include=["tasks.timers", "tasks.alerts"])
    celery.conf.update(celery_config(settings or Settings()))
    return celery


app = make_celery()
