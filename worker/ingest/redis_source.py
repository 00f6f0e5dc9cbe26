"""The order queue on Redis, consumed reliably: nothing is ever only in the consumer's memory.

kombu's Redis consumer takes a message with BRPOP (gone from the list) and records it as
unacknowledged only once it has read the reply; a consumer killed between the two loses the
message, and one BRPOP is always outstanding while a batch is handled (docs/faults.md). This
consumer moves messages instead (`BLMOVE` / `LMOVE`, atomic in Redis) from the queue into a list
of its own, `<queue>.taken.<consumer id>`, and removes them from it only after the batch commits.
While it lives it keeps a heartbeat key (`<queue>.alive.<consumer id>`, refreshed by a thread,
expiring after `ingest_visibility_timeout`); any consumer puts the taken list of one whose
heartbeat has expired back at the head of the queue, in one Lua script, so a batch is restored
exactly once.

The queue itself stays kombu's: producers publish with kombu
(`worker.ingest.consumer.publish_events`, Celery's producers, any kombu client) and the messages
are kombu's JSON envelopes, which are unwrapped here (`envelope_message`). Something pushed onto
the list by hand that is not such an envelope is handled as the event body itself (and dead-
lettered if it is not one).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from config.settings import Settings
from worker.ingest.batch import RawMessage

log = structlog.get_logger("slatimer.ingest")

PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
"""kombu publishes a message with a priority to `<queue>\\x06\\x16<step>`; those are swept into
the queue, so a producer that sets a priority is not left unheard."""
SOCKET_TIMEOUT = 10.0
"""Seconds a Redis reply may take (blocking waits are shorter): a black-holed connection is
given up after this, and the consumer reconnects."""

# Move up to ARGV[1] messages from the tail of KEYS[1] (the oldest) onto KEYS[2], atomically.
TAKE_SCRIPT = """
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
  local message = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not message then break end
  taken[#taken + 1] = message
end
return taken
"""

# Put a taken list back at the tail of the queue (consumed next), oldest last, so order holds.
# KEYS: taken list, queue, heartbeat, registry; ARGV: consumer id, "force" or "".
RESTORE_SCRIPT = """
if ARGV[2] ~= 'force' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local moved = 0
while redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT') do moved = moved + 1 end
if ARGV[2] ~= 'force' then redis.call('SREM', KEYS[4], ARGV[1]) end
return moved
"""

# Sweep kombu's priority lists into the queue, oldest first.
SWEEP_SCRIPT = """
local moved = 0
for i = 2, #KEYS do
  while redis.call('LMOVE', KEYS[i], KEYS[1], 'RIGHT', 'LEFT') do moved = moved + 1 end
end
return moved
"""

BROKER_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


class RedisOrderSource:
    """One consumer of the Redis order queue: take a batch, then ack it or give it back."""

    def __init__(self, client: redis.Redis, settings: Settings, consumer_id: str) -> None:
        self.client: Any = client  # redis-py's stubs say int for BLMOVE's (float) timeout
        self.queue = settings.order_queue
        self.consumer_id = consumer_id
        self.taken_key = taken_key(self.queue, consumer_id)
        self.alive_key = alive_key(self.queue, consumer_id)
        self.registry_key = f"{self.queue}.consumers"
        self.ttl_ms = max(int(settings.ingest_visibility_timeout * 1000), 100)
        self._take = client.register_script(TAKE_SCRIPT)
        self._restore = client.register_script(RESTORE_SCRIPT)
        self._sweep = client.register_script(SWEEP_SCRIPT)
        self._held: list[bytes] = []

    # -- life ------------------------------------------------------------------------------

    def beat(self) -> None:
        """Say this consumer is alive for another visibility timeout."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.alive_key, b"1", px=self.ttl_ms)
            pipe.sadd(self.registry_key, self.consumer_id)
            pipe.execute()

    def leave(self) -> None:
        """A clean stop: give back anything taken (a failed commit's batch), then go."""
        self.give_back()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(self.alive_key)
            pipe.srem(self.registry_key, self.consumer_id)
            pipe.execute()

    # -- consuming -------------------------------------------------------------------------

    def take(
        self, limit: int, first_wait: float, fill_wait: float, stop: threading.Event
    ) -> list[RawMessage]:
        """Up to `limit` messages, oldest first: wait up to `first_wait` s for one, then up to
        `fill_wait` s from its arrival for the batch to fill. Each is moved onto this consumer's
        taken list before it is returned, so a kill at any moment leaves it in Redis."""
        raws: list[bytes] = list(self._take(keys=[self.queue, self.taken_key], args=[limit]))
        deadline = time.monotonic() + (fill_wait if raws else first_wait)
        while len(raws) < limit and not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            first = self.client.blmove(
                self.queue, self.taken_key, min(remaining, 1.0), "RIGHT", "LEFT"
            )
            if first is None:
                continue
            if not raws:
                deadline = time.monotonic() + fill_wait
            raws.append(first)
            raws += self._take(keys=[self.queue, self.taken_key], args=[limit - len(raws)])
        self._held = raws
        return [envelope_message(raw) for raw in raws]

    def ack(self) -> None:
        """The batch is committed: forget exactly its messages (oldest first, from the tail).
        Anything else on the taken list was moved by a command whose reply never arrived (a
        cut connection): it was never handled, so it goes back to the queue."""
        with self.client.pipeline(transaction=False) as pipe:
            for raw in self._held:
                pipe.lrem(self.taken_key, -1, raw)
            pipe.llen(self.taken_key)
            *_, strays = pipe.execute()
        self._held = []
        if strays:
            log.warning("gave back messages taken without a reply", messages=strays)
            self.give_back()

    def give_back(self) -> int:
        """The batch was not committed: back at the head of the queue, in its order."""
        self._held = []
        keys = [self.taken_key, self.queue, self.alive_key, self.registry_key]
        return int(self._restore(keys=keys, args=[self.consumer_id, "force"]))

    # -- other consumers' batches --------------------------------------------------------------

    def restore_abandoned(self) -> int:
        """Put back what consumers whose heartbeat expired had taken (killed mid-batch), and
        what kombu producers put on priority lists. Returns how many messages were restored."""
        restored = 0
        for member in self.client.smembers(self.registry_key):
            other = member.decode() if isinstance(member, bytes) else str(member)
            if other == self.consumer_id:
                continue
            keys = [
                taken_key(self.queue, other),
                self.queue,
                alive_key(self.queue, other),
                self.registry_key,
            ]
            moved = int(self._restore(keys=keys, args=[other, ""]))
            if moved > 0:
                log.warning("restored a dead consumer's batch", consumer=other, messages=moved)
                restored += moved
        priority_lists = [f"{self.queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]
        restored += int(self._sweep(keys=[self.queue, *priority_lists]))
        return restored


def taken_key(queue: str, consumer_id: str) -> str:
    return f"{queue}.taken.{consumer_id}"


def alive_key(queue: str, consumer_id: str) -> str:
    return f"{queue}.alive.{consumer_id}"


def envelope_message(raw: bytes) -> RawMessage:
    """The producer's message inside kombu's Redis envelope: the body (base64 when the envelope
    says so) and the declared content type, encoding and compression."""
    try:
        envelope = orjson.loads(raw)
        properties = envelope["properties"]
        body = envelope["body"]
        headers = envelope.get("headers") or {}
        if not isinstance(properties, dict) or not isinstance(headers, dict):
            raise TypeError("not a kombu envelope")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return RawMessage(body=raw)  # pushed by hand: the bytes are the message
    if properties.get("body_encoding") == "base64":
        data = base64.b64decode(str(body))
    else:
        data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else raw
    compression = headers.get("compression")
    return RawMessage(
        body=data,
        content_type=envelope.get("content-type") or None,
        content_encoding=envelope.get("content-encoding") or None,
        compression=str(compression) if compression else None,
    )


class Heartbeat:
    """A thread that keeps a consumer's heartbeat fresh while a batch takes long (a slow
    database, a big batch): the batch is restored only when the process is gone."""

    def __init__(self, source: RedisOrderSource) -> None:
        self.source = source
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="ingest-heartbeat", daemon=True)

    def _run(self) -> None:
        every = self.source.ttl_ms / 3000
        while not self.stopped.wait(every):
            try:
                self.source.beat()
            except BROKER_ERRORS as error:  # the consumer loop sees the same and reconnects
                log.warning("heartbeat failed", error=repr(error)[:200])


@contextmanager
def redis_source(settings: Settings, url: str) -> Iterator[RedisOrderSource]:
    """A connected source with a fresh consumer id and a running heartbeat; on the way out,
    what it holds goes back (if Redis is reachable) and its heartbeat stops."""
    consumer_id = new_consumer_id()
    client: Any = redis.Redis.from_url(
        url,
        client_name=client_name(settings.order_queue, consumer_id),
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),  # a move is not idempotent: never re-sent blindly
    )
    source = RedisOrderSource(client, settings, consumer_id)
    source.beat()
    heartbeat = Heartbeat(source)
    heartbeat.thread.start()
    try:
        yield source
    finally:
        heartbeat.stopped.set()
        try:
            source.leave()
        except BROKER_ERRORS as error:  # the heartbeat expires and another consumer restores
            log.warning("could not give back on leaving", error=repr(error)[:200])
        client.close()


def client_name(queue: str, consumer_id: str) -> str:
    """What `CLIENT LIST` shows for a consumer's connections (no spaces allowed)."""
    return f"slatimer-ingest:{queue}:{consumer_id}".replace(" ", "_")


def new_consumer_id() -> str:
    return uuid.uuid4().hex[:16]
