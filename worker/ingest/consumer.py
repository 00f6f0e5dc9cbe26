"""`slatimer ingest`, the broker half: the order-queue consumer and the producer helper.

Producers publish plain JSON events (not Celery messages) to the durable direct exchange
`settings.order_exchange` with routing key `settings.order_routing_key`, bound to the durable queue
`settings.order_queue` (docs/ingest.md). The consumer collects a batch, judges it in ONE
transaction (worker/ingest/batch.py) and acknowledges its messages only after the commit. When
the database is unreachable the batch is rejected with requeue and the consumer reconnects after a
backoff; when the broker is lost, it reconnects likewise and the broker redelivers what was unacked.
On Redis the consumer is slatimer's own (worker/ingest/redis_source.py: messages are moved,
never popped, so a killed consumer loses nothing); on RabbitMQ and the embedded transport it
is kombu's.

Bodies are never decoded by kombu: no serializer runs on untrusted input (pickle above all); the
raw bytes and the declared content type go to the batch logic.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import timedelta
from types import FrameType
from typing import Any, Protocol

import kombu
import structlog
from kombu.exceptions import OperationalError as BrokerOperationalError

from config.settings import Settings
from store.base import DeadLetter
from worker.ingest.batch import (
    JSON_TYPE,
    IngestStats,
    RawMessage,
    ingest_batch,
    is_connectivity_error,
)
from worker.ingest.redis_source import BROKER_ERRORS as REDIS_ERRORS
from worker.ingest.redis_source import redis_source
from worker.process import metrics
from worker.process.backoff import compute_backoff
from worker.service.bootstrap import App

log = structlog.get_logger("slatimer.ingest")

# kombu ships py.typed but leaves its functions unannotated, and this project's mypy settings
# refuse calls to unannotated functions: kombu's objects are handled as Any at this boundary.
_kombu: Any = kombu
Connection = Any  # kombu.Connection
Queue = Any  # kombu.Queue
Message = Any  # kombu.message.Message

PERSISTENT = 2
PUBLISH_RETRY = {"max_retries": 5, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 3}
IDLE_TICK = 1.0
"""Seconds a waiting consumer blocks before it looks at its stop flag again."""
RESTORE_EVERY = 1.0
"""Seconds between two looks for abandoned batches (Redis: taken by a consumer that died)."""


REDIS_BROKER_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, BrokerOperationalError)


class DatabaseUnavailable(Exception):
    """The store could not be reached; the batch was requeued, nothing was dead-lettered."""


class BrokerUnavailable(Exception):
    """The broker connection failed or was lost; unacknowledged messages come back."""


def order_queue(settings: Settings) -> Queue:
    exchange = _kombu.Exchange(settings.order_exchange, type="direct", durable=True)
    return _kombu.Queue(
        settings.order_queue, exchange, routing_key=settings.order_routing_key, durable=True
    )


def connect(settings: Settings, url: str | None = None) -> Connection:
    """A lazy connection to `url` (default: the broker_url setting); nothing happens on the
    network until it is used."""
    url = url or settings.broker_url
    return _kombu.Connection(url, transport_options=transport_options(url))


def transport_options(url: str) -> dict[str, Any]:
    """RabbitMQ: publisher confirms, so a publish returns once the broker has the message.
    Redis needs none (LPUSH returns once it is done; ingest consumes it with its own reliable
    consumer, worker/ingest/redis_source.py). The embedded transport gets none: it hands its options
    to SQLAlchemy's create_engine, which refuses unknown ones (polling_interval)."""
    if url.startswith(("amqp", "pyamqp")):
        return {"confirm_publish": True}
    return {}


def publish_events(
    connection_or_url: Connection | str,
    bodies: Iterable[bytes],
    settings: Settings,
    content_type: str = JSON_TYPE,
) -> int:
    """Publish each body as is to the order queue (declaring it), persistent; returns the count.
    A URL gets its own connection, closed at the end; a given connection is left open."""
    owned = isinstance(connection_or_url, str)
    if isinstance(connection_or_url, str):
        connection = connect(settings, connection_or_url)
    else:
        connection = connection_or_url
    queue = order_queue(settings)
    encoding = "utf-8" if content_type.startswith(JSON_TYPE) else "binary"
    try:
        producer = connection.Producer()
        count = 0
        for body in bodies:
            producer.publish(
                body,
                exchange=queue.exchange,
                routing_key=settings.order_routing_key,
                content_type=content_type,
                content_encoding=encoding,
                delivery_mode=PERSISTENT,
                declare=[queue],
                retry=True,
                retry_policy=PUBLISH_RETRY,
            )
            count += 1
        return count
    finally:
        if owned:
            connection.release()


def republish(connection: Connection, letters: Sequence[DeadLetter], settings: Settings) -> None:
    """Re-drive dead letters with their original content type. A missing one (a raw AMQP
    producer's) goes out as application/json, which the consumer treats the same."""
    for letter in letters:
        publish_events(connection, [letter.body], settings, letter.content_type or JSON_TYPE)


def raw_message(message: Message) -> RawMessage:
    """The bytes the producer sent. py-amqp decodes a body that declares a content_encoding;
    encoding it again with that same codec gives back exactly the bytes it decoded."""
    body = message.body
    if isinstance(body, str):
        try:
            body = body.encode(message.content_encoding or "utf-8")
        except (LookupError, UnicodeError):
            body = body.encode("utf-8", "surrogatepass")
    compression = message.headers.get("compression")
    return RawMessage(
        body=body or b"",
        content_type=message.content_type or None,
        content_encoding=message.content_encoding or None,
        compression=str(compression) if compression else None,
    )


class Ingestor:
    """The consumer: collect a batch, handle it in one transaction, acknowledge, repeat."""

    def __init__(self, app: App, once_idle: float = 2.0) -> None:
        self.app = app
        self.settings = app.settings
        self.queue = order_queue(app.settings)
        self.max_skew = timedelta(seconds=app.settings.max_clock_skew)
        self.stats = IngestStats()
        self.stop = threading.Event()
        self.once_idle = max(once_idle, app.settings.ingest_batch_wait)
        self.failures = 0
        self._next_restore = 0.0

    def run(self, once: bool = False) -> int:
        """Consume until stopped, reconnecting with backoff. With `once`: until the queue has
        been idle for `once_idle` seconds, and a failure ends the run. Returns the exit status."""
        while not self.stop.is_set():
            try:
                self._connected(once)
                return 0
            except DatabaseUnavailable as error:
                self.stats.database_failures += 1
                log.error("database unavailable; batch requeued", error=str(error)[:500])
            except BrokerUnavailable as error:
                self.stats.broker_reconnects += 1
                log.error("broker unavailable", error=str(error)[:500])
            if once:
                return 1
            self.failures += 1
            self.stop.wait(compute_backoff(self.failures))
        return 0

    def stop_on_signals(self) -> None:
        """SIGTERM/SIGINT: finish the batch in hand (commit and acknowledge it), then stop."""

        def request_stop(_signum: int, _frame: FrameType | None) -> None:
            self.stop.set()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    def _connected(self, once: bool) -> None:
        """Consume from the broker: Redis through the reliable consumer
        (worker/ingest/redis_source.py), any other broker through kombu. A broker error of either
        becomes BrokerUnavailable."""
        url = self.settings.broker_url
        if url.startswith("redis"):
            try:
                declare_order_queue(self.settings)
                with redis_source(self.settings, url) as source:
                    log.info("consuming", queue=self.queue.name, broker="redis (reliable)")
                    self._consume(source, once)
            except REDIS_BROKER_ERRORS as error:
                raise BrokerUnavailable(f"{type(error).__name__}: {error}") from error
            return
        with connect(self.settings) as connection:
            broker_errors = (
                *connection.recoverable_connection_errors,
                *connection.recoverable_channel_errors,
                BrokerOperationalError,
                OSError,
            )
            try:
                connection.connect()
                with KombuOrderSource(connection, self.queue, self.settings) as source:
                    log.info("consuming", queue=self.queue.name, broker=connection.as_uri())
                    self._consume(source, once)
            except broker_errors as error:
                raise BrokerUnavailable(f"{type(error).__name__}: {error}") from error

    def _consume(self, source: OrderSource, once: bool) -> None:
        while not self.stop.is_set():
            self._restore_abandoned(source)
            idle = self.once_idle if once else IDLE_TICK
            batch = source.take(
                self.settings.ingest_batch_size, idle, self.settings.ingest_batch_wait, self.stop
            )
            if batch:
                self._handle(source, batch)
            elif once:
                return
            else:
                self.failures = 0  # connected, idle, nothing failing: backoff starts over

    def _restore_abandoned(self, source: OrderSource) -> None:
        """Put back on the queue what a consumer killed mid-batch took and never acknowledged,
        at most once a second (RabbitMQ does it by itself when the connection dies)."""
        if time.monotonic() < self._next_restore:
            return
        self._next_restore = time.monotonic() + RESTORE_EVERY
        source.restore_abandoned()

    def _handle(self, source: OrderSource, batch: list[RawMessage]) -> None:
        try:
            with self.app.uow() as uow:
                now = self.app.clock.now()
                result = ingest_batch(
                    batch, uow, now, self.app.policy, self.queue.name, self.max_skew,
                    self.settings.ingest_set_based,
                )  # fmt: skip
                uow.commit()
        except Exception as error:
            _give_back(source)
            if is_connectivity_error(error):
                raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error
            raise
        source.ack()
        self.stats.add(result)
        metrics.batch_ingested(result.accepted, [letter.field for letter in result.dead_letters])
        self.failures = 0
        for letter in result.dead_letters:
            log.warning(
                "dead-lettered", queue=self.queue.name, field=letter.field, reason=letter.reason
            )
        log.info("batch", size=len(batch), accepted=result.accepted, outcomes=len(result.outcomes))


def _give_back(source: OrderSource) -> None:
    """Give the batch back now. Best effort: if the broker is gone too, the broker (RabbitMQ)
    or another consumer (Redis, once the heartbeat expires) puts it back by itself."""
    try:
        source.give_back()
    except Exception as error:  # noqa: BLE001 - any failure means "it comes back anyway"
        log.warning("give back failed; the batch comes back by itself", error=repr(error))


def declare_order_queue(settings: Settings) -> None:
    """Declare the order queue and its binding (kombu keeps bindings in Redis too), so events
    published before any producer declared it are routed to it."""
    with connect(settings) as connection:
        order_queue(settings)(connection.default_channel).declare()


class OrderSource(Protocol):
    """Where batches come from: take one, then ack it after the commit or give it back."""

    def take(
        self, limit: int, first_wait: float, fill_wait: float, stop: threading.Event
    ) -> list[RawMessage]: ...

    def ack(self) -> None: ...

    def give_back(self) -> int: ...

    def restore_abandoned(self) -> int: ...


class KombuOrderSource:
    """RabbitMQ and kombu's SQL transport, through a kombu consumer."""

    def __init__(self, connection: Connection, queue: Queue, settings: Settings) -> None:
        self.connection = connection
        self.buffer: list[Message] = []
        self.held: list[Message] = []
        self.consumer = connection.Consumer(
            queues=[queue],
            on_message=self.buffer.append,  # on_message: kombu does not decode the body
            on_decode_error=lambda message, _error: self.buffer.append(message),
            prefetch_count=settings.ingest_batch_size,
            accept=[JSON_TYPE],
        )

    def __enter__(self) -> KombuOrderSource:
        self.consumer.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.consumer.__exit__(*exc)

    def take(
        self, limit: int, first_wait: float, fill_wait: float, stop: threading.Event
    ) -> list[RawMessage]:
        """Wait up to `first_wait` s for a first message, then up to `fill_wait` s from its
        arrival for the batch to fill (an idle queue costs nothing, a lone message waits little)."""
        deadline = time.monotonic() + first_wait
        filling = False
        while len(self.buffer) < limit and not stop.is_set():
            if self.buffer and not filling:
                filling, deadline = True, time.monotonic() + fill_wait
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                self.connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        self.held = self.buffer[:]
        self.buffer.clear()
        return [raw_message(message) for message in self.held]

    def ack(self) -> None:
        """Message by message: kombu's virtual transports ignore ack(multiple=True), and
        RabbitMQ's acks are not waited for."""
        for message in self.held:
            message.ack()
        self.held = []

    def give_back(self) -> int:
        """RabbitMQ: basic.reject with requeue; the SQL transport: back on the queue."""
        held, self.held = self.held, []
        for message in held:
            message.requeue()
        return len(held)

    def restore_abandoned(self) -> int:
        return 0  # the broker requeues a dead connection's unacknowledged messages itself
