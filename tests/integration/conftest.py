"""Broker fixtures: real Redis and RabbitMQ (skipped locally when down, failing in CI), and the
embedded transport. Each test gets its own queue and exchange, deleted afterwards, so tests and
other users of the same servers never see each other's messages."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection

from config.settings import Settings
from tests.conftest import server_missing
from worker.ingest.consumer import order_queue

REDIS_URL = os.environ.get("SLATIMER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("SLATIMER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as error:  # noqa: BLE001 - any failure to answer means "missing"
        server_missing(f"Redis at {REDIS_URL}", error)
    return REDIS_URL


@pytest.fixture(scope="session")
def amqp_url() -> str:
    try:
        with Connection(AMQP_URL, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # noqa: BLE001
        server_missing(f"RabbitMQ at {AMQP_URL}", error)
    return AMQP_URL


@dataclass
class OrderQueue:
    """A private order queue on one broker: its settings, and the env for `slatimer` children."""

    kind: str
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)

    def connection(self) -> Any:
        return Connection(self.settings.broker_url)

    def depth(self) -> int:
        """Messages ready on the queue (unacknowledged ones are not counted); declaring it
        again is harmless, and a passive declare fails on Redis once the queue is empty."""
        with self.connection() as connection:
            queue = order_queue(self.settings)(connection.default_channel)
            return int(queue.queue_declare().message_count)

    def unacked_on_redis(self) -> int:
        """Messages Redis consumers took but have not acknowledged: on their taken lists
        (worker/ingest/redis_source.py)."""
        if self.kind != "redis":
            return 0
        client = redis.Redis.from_url(self.settings.broker_url)
        taken = client.keys(f"{self.settings.order_queue}.taken.*")
        return sum(int(client.llen(key)) for key in taken)

    def delete(self) -> None:
        with self.connection() as connection:
            channel = connection.default_channel
            queue = order_queue(self.settings)(channel)
            queue.delete()
            if self.kind == "rabbitmq":
                queue.exchange.delete()


def _order_queue(kind: str, broker_url: str, database_url: str) -> OrderQueue:
    tag = uuid.uuid4().hex[:10]
    names = {
        "order_queue": f"slatimer.test.{tag}.orders",
        "order_exchange": f"slatimer.test.{tag}.events",
        "order_routing_key": f"order.event.{tag}",
    }
    settings = Settings(
        broker_url=broker_url,
        database_url=database_url,
        ingest_batch_size=4,
        ingest_batch_wait=0.05,
        **names,  # type: ignore[arg-type]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLATIMER_")}
    env.update({f"SLATIMER_{key.upper()}": value for key, value in names.items()})
    env.update(
        SLATIMER_BROKER_URL=broker_url,
        SLATIMER_DATABASE_URL=database_url,
        SLATIMER_INGEST_BATCH_SIZE="4",
        SLATIMER_INGEST_BATCH_WAIT="0.05",
        SLATIMER_LOG_LEVEL="WARNING",
    )
    return OrderQueue(kind, settings, env)


@pytest.fixture(params=["redis", "rabbitmq", "embedded"])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each broker slatimer supports: Redis, RabbitMQ, and kombu's SQLite transport (default)."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    if request.param == "rabbitmq":
        return str(request.getfixturevalue("amqp_url"))
    return f"sqla+sqlite:///{tmp_path / 'broker.db'}"


def broker_kind(url: str) -> str:
    return "redis" if url.startswith("redis") else "rabbitmq" if "amqp" in url else "embedded"


@pytest.fixture()
def make_order_queue() -> Iterator[Any]:
    """`make_order_queue(broker_url, database_url)` -> a private OrderQueue, deleted after."""
    made: list[OrderQueue] = []

    def make(broker_url: str, database_url: str) -> OrderQueue:
        made.append(_order_queue(broker_kind(broker_url), broker_url, database_url))
        return made[-1]

    yield make
    for queue in made:
        queue.delete()
