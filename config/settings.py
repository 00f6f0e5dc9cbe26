"""Runtime settings, read from `SLATIMER_*` environment variables (pydantic-settings).

With nothing set, slatimer runs on embedded defaults: a SQLite file store and the bundled policy.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

POLICY_DIR = Path(__file__).parent / "policies"
DEFAULT_POLICY = POLICY_DIR / "default.toml"
DEMO_POLICY = POLICY_DIR / "demo.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLATIMER_", env_file=None, extra="ignore")

    database_url: str = "sqlite:///slatimer.db"
    """SQLAlchemy URL; e.g. postgresql+psycopg://user@host:5432/slatimer in production."""
    broker_url: str = "sqla+sqlite:///slatimer-broker.db"
    """kombu/Celery broker: redis://host:6379/0 or amqp://user:pass@host:5672// in production;
    the default is kombu's SQLAlchemy transport on a local SQLite file (no server needed)."""
    policy_file: Path = DEFAULT_POLICY
    log_level: str = "INFO"
    log_json: bool = True

    # ingest (the order queue)
    order_exchange: str = "slatimer.events"
    order_queue: str = "slatimer.orders"
    order_routing_key: str = "order.event"
    ingest_batch_size: int = Field(default=500, ge=1, le=10_000)
    ingest_batch_wait: float = Field(default=0.2, gt=0)
    """Seconds to wait for a batch to fill before handling what has arrived."""
    max_clock_skew: float = Field(default=3600, ge=0)
    """Seconds an event's occurred_at may lie in the future (producer clock skew) before refusal."""

    # durable timers
    timer_queue: str = "slatimer.timers"
    """The Celery queue of the check tasks (one per deployment sharing a broker)."""
    timer_horizon: float = Field(default=300, gt=0)
    """Seconds ahead the dispatcher hands deadlines to Celery as ETA tasks. Keep it well under
    the Redis visibility_timeout and RabbitMQ's consumer_timeout."""
    dispatch_interval: float = Field(default=1.0, gt=0)
    dispatch_batch: int = Field(default=1000, ge=1)
    redispatch_grace: float = Field(default=300, gt=0)
    """Seconds past due after which an enqueued deadline whose task never completed is re-sent."""
    worker_concurrency: int = Field(default=2, ge=1)
    visibility_timeout: float = Field(default=7200, gt=0)
