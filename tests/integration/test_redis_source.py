"""The reliable Redis consumer (worker/ingest/redis_source.py) on a real Redis: a message is on the
queue or on a consumer's taken list at every moment, until the batch that holds it commits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from tests.integration.conftest import OrderQueue
from worker.ingest.consumer import publish_events
from worker.ingest.redis_source import RedisOrderSource, envelope_message, redis_source

NEVER = threading.Event()


@pytest.fixture
def queue(redis_url: str, make_order_queue: Any) -> Iterator[OrderQueue]:
    made: OrderQueue = make_order_queue(redis_url, "sqlite://")
    yield made
    client = redis.Redis.from_url(redis_url)
    leftovers = client.keys(f"{made.settings.order_queue}*")
    if leftovers:
        client.delete(*leftovers)


def bodies(n: int, start: int = 0) -> list[bytes]:
    return [b'{"n": %d}' % i for i in range(start, start + n)]


def consumer(queue: OrderQueue, name: str, ttl: float = 30) -> RedisOrderSource:
    settings = queue.settings.model_copy(update={"ingest_visibility_timeout": ttl})
    source = RedisOrderSource(redis.Redis.from_url(settings.broker_url), settings, name)
    source.beat()
    return source


def test_a_taken_batch_stays_in_redis_until_acknowledged(queue: OrderQueue) -> None:
    # Given five events published with kombu
    publish_events(queue.settings.broker_url, bodies(5), queue.settings)
    source = consumer(queue, "a")
    # When a consumer takes three
    taken = source.take(3, 1, 0.05, NEVER)
    # Then it gets the oldest three, unwrapped from kombu's envelope, and they sit on its list
    assert [m.body for m in taken] == bodies(3)
    assert taken[0].content_type == "application/json"
    assert (queue.depth(), queue.unacked_on_redis()) == (2, 3)
    # and acknowledging forgets them
    source.ack()
    assert (queue.depth(), queue.unacked_on_redis()) == (2, 0)


def test_a_batch_given_back_is_taken_next_in_its_order(queue: OrderQueue) -> None:
    publish_events(queue.settings.broker_url, bodies(4), queue.settings)
    source = consumer(queue, "a")
    assert [m.body for m in source.take(2, 1, 0.05, NEVER)] == bodies(2)
    # When the commit failed and the batch is given back
    assert source.give_back() == 2
    # Then the next take gets the same messages first, in the same order
    assert [m.body for m in source.take(10, 1, 0.05, NEVER)] == bodies(4)


def test_only_a_dead_consumers_batch_is_restored(queue: OrderQueue) -> None:
    # Given two consumers holding a batch each; the first one's heartbeat expires (it died)
    publish_events(queue.settings.broker_url, bodies(4), queue.settings)
    dead, alive = consumer(queue, "dead", ttl=0.2), consumer(queue, "alive")
    assert [m.body for m in dead.take(2, 1, 0.05, NEVER)] == bodies(2)
    assert [m.body for m in alive.take(1, 1, 0.05, NEVER)] == bodies(1, 2)
    time.sleep(0.3)
    # When a third consumer looks for abandoned batches
    restored = consumer(queue, "third").restore_abandoned()
    # Then the dead one's batch is back at the head of the queue, the live one's untouched
    assert restored == 2
    assert (queue.depth(), queue.unacked_on_redis()) == (3, 1)
    again = consumer(queue, "fourth").take(10, 1, 0.05, NEVER)
    assert [m.body for m in again] == [*bodies(2), *bodies(1, 3)]
    # and looking again restores nothing twice
    assert consumer(queue, "fifth").restore_abandoned() == 0


def test_a_live_consumers_heartbeat_outlasts_a_slow_batch(queue: OrderQueue) -> None:
    # Given a consumer whose batch takes three times its visibility timeout
    publish_events(queue.settings.broker_url, bodies(2), queue.settings)
    settings = queue.settings.model_copy(update={"ingest_visibility_timeout": 0.3})
    with redis_source(settings, settings.broker_url) as source:
        assert len(source.take(2, 1, 0.05, NEVER)) == 2
        time.sleep(0.9)
        # Then nobody restores it meanwhile: the heartbeat thread keeps it alive
        assert consumer(queue, "other").restore_abandoned() == 0
        assert queue.unacked_on_redis() == 2
        source.ack()
    assert (queue.depth(), queue.unacked_on_redis()) == (0, 0)


def test_leaving_gives_back_what_was_not_acknowledged(queue: OrderQueue) -> None:
    publish_events(queue.settings.broker_url, bodies(3), queue.settings)
    with redis_source(queue.settings, queue.settings.broker_url) as source:
        assert len(source.take(2, 1, 0.05, NEVER)) == 2
    assert (queue.depth(), queue.unacked_on_redis()) == (3, 0)


def test_priority_lists_are_swept_into_the_queue(queue: OrderQueue) -> None:
    # Given a kombu producer that set a priority (kombu puts it on a list of its own)
    client = redis.Redis.from_url(queue.settings.broker_url)
    client.lpush(f"{queue.settings.order_queue}\x06\x163", b'{"n": 7}')
    source = consumer(queue, "a")
    # When the consumer looks for abandoned messages, then takes
    assert source.restore_abandoned() == 1
    # Then the message is consumed like any other
    assert [m.body for m in source.take(5, 1, 0.05, NEVER)] == [b'{"n": 7}']


def test_a_message_pushed_by_hand_is_its_own_body() -> None:
    # Not a kombu envelope: the bytes go to the contract as they are (a dead letter if bad)
    assert envelope_message(b'{"event_type": "order.created"}').body == (
        b'{"event_type": "order.created"}'
    )
    assert envelope_message(b"\xff garbage").body == b"\xff garbage"
    plain = b'{"body": "x", "properties": {}, "content-type": "text/plain"}'
    assert (envelope_message(plain).body, envelope_message(plain).content_type) == (
        b"x",
        "text/plain",
    )


def test_a_message_moved_without_a_reply_goes_back_when_the_batch_is_acknowledged(
    queue: OrderQueue,
) -> None:
    # Given a consumer holding a batch, and a message moved onto its taken list by a command
    # whose reply was lost in a cut connection (never handled)
    publish_events(queue.settings.broker_url, bodies(3), queue.settings)
    source = consumer(queue, "a")
    assert [m.body for m in source.take(2, 1, 0.05, NEVER)] == bodies(2)
    client = redis.Redis.from_url(queue.settings.broker_url)
    client.lmove(queue.settings.order_queue, source.taken_key, "RIGHT", "LEFT")
    # When the batch commits and is acknowledged
    source.ack()
    # Then the stray message is back on the queue, not deleted with the batch
    assert (queue.depth(), queue.unacked_on_redis()) == (1, 0)
    assert [m.body for m in source.take(5, 1, 0.05, NEVER)] == bodies(1, 2)
