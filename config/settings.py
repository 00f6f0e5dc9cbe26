"""Runtime settings, read from `SLATIMER_*` environment variables (pydantic-settings).

With nothing set, slatimer runs on embedded defaults: a SQLite file store and the bundled policy.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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
    policy_history: list[Path] = []
    """Older policy versions (4.1/4.2): orders created before the current file's
    `effective_from` are judged by the version then in force."""
    log_level: str = "INFO"
    log_json: bool = True

    # ingest (the order queue)
    order_exchange: str = "slatimer.events"
    order_queue: str = "slatimer.orders"
    order_routing_key: str = "order.event"
    ingest_batch_size: int = Field(default=500, ge=1, le=10_000)
    ingest_batch_wait: float = Field(default=0.2, gt=0)
    """Seconds to wait for a batch to fill before handling what has arrived."""
    ingest_visibility_timeout: float = Field(default=30, gt=0)
    """Redis: seconds after which the batch a dead consumer had taken goes back on the order
    queue. A live consumer's heartbeat (refreshed every third of this by a thread) keeps its
    batch however long it takes; only a process that is gone, or cut off from Redis this long,
    loses it to another consumer (handled twice at worst, which the inbox makes harmless)."""
    ingest_set_based: bool = True
    """Handle each batch set-based first (store/sql/batch.py: a few queries for all its
    orders, ~2-3x the events/s); off = message by message, each in its own savepoint (the
    fallback either way when a set-based attempt fails)."""
    timer_set_based: bool = True
    """Fire each timer group set-based first (`uow.batch`), likewise."""
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
    timer_group_window: float = Field(default=0.25, ge=0)
    """Deadlines due within this many seconds share one check task, run at the last one's due
    time: fewer messages in a wave, at most this much lateness for the earliest."""
    timer_lanes: int = Field(default=8, ge=1)
    """A wave's timer groups are laid out in up to this many lanes by merchant, so that groups
    running at once touch different merchants; keep it at least the worker children of all
    workers together (docs/runtime.md, "Scaling the worker out")."""
    worker_concurrency: int = Field(default=2, ge=1)
    worker_name: str = Field(default="slatimer@%h", min_length=1)
    """The Celery node name (`%h` is the host name). Each worker process needs its own: two of
    one name on a host are one node to Flower and to remote control."""
    visibility_timeout: float = Field(default=7200, gt=0)

    # monitoring and the read API (docs/monitoring.md, docs/api.md)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port this process serves Prometheus /metrics on (ingest, dispatcher, worker); 0 = off."""
    metrics_dir: Path | None = None
    """The worker's PROMETHEUS_MULTIPROC_DIR (prefork children write there); default: a temp dir."""
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    operator_api_key: SecretStr | None = None
    """Bearer key that reads every merchant's data; unset = no operator access."""
    console_secret: SecretStr | None = None
    """Key that signs the console's session cookies (docs/console.md); unset = a random one
    made at start, so sessions end when the process restarts and are not shared by replicas."""
    console_session_hours: float = Field(default=12, gt=0)
    """How long a console login lasts."""
    console_secure_cookie: bool = False
    """Mark the session cookie Secure (sent over HTTPS only): set it behind a TLS proxy. Over
    https the cookie is Secure whatever this says."""
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_basic_auth: SecretStr | None = None
    """`user:password` for Flower's UI and API (handed to Flower in its environment, not argv)."""

    # alerts to merchants: the outbox relay and webhook delivery (docs/alerts.md)
    alert_queue: str = "slatimer.alerts"
    """The Celery queue of the delivery tasks; `slatimer worker` consumes it too."""
    alert_batch: int = Field(default=200, ge=1)
    """How many due alerts one relay pass claims at most."""
    alert_lease: float = Field(default=300, gt=0)
    """Seconds a claimed alert is left to its task before it is claimed again (a lost task)."""
    alert_no_endpoint_wait: float = Field(default=60, gt=0)
    """Seconds between looks at alerts of a merchant with no endpoint (they go out once added)."""
    alert_connect_timeout: float = Field(default=5, gt=0)
    alert_read_timeout: float = Field(default=10, gt=0)
    alert_retry_base: float = Field(default=30, gt=0)
    """Seconds: the first retry's ceiling; each next one is 4x, up to alert_retry_cap."""
    alert_retry_cap: float = Field(default=43_200, gt=0)
    """Seconds: the longest wait between attempts, also the cap on a receiver's Retry-After."""
    alert_max_attempts: int = Field(default=10, ge=1)
    webhook_allow: str = ""
    """Comma-separated hosts/CIDRs that may be used over http or in non-public ranges."""
    webhook_secret_grace: float = Field(default=86_400, ge=0)
    """Seconds after a secret rotation during which alerts are signed with both secrets."""
