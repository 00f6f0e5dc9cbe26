"""tasks/kombu_redis.py on real Redis: a channel whose connection Celery released after losing
Redis answers with a connection error, which Celery survives, where kombu's own raised an
AttributeError that stopped the worker; the message stays unacknowledged on Redis, for the
visibility-timeout restore."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection

from tasks.app import use_patched_redis_transport

pytestmark = pytest.mark.integration


@pytest.fixture
def taken(redis_url: str) -> Iterator[tuple[Any, redis.Redis]]:
    """A message taken from a private queue and not acknowledged, through the patched transport;
    its keys are removed afterwards."""
    use_patched_redis_transport()
    name = f"t.kombu.{uuid.uuid4().hex[:8]}"
    server = redis.Redis.from_url(redis_url)
    connection = Connection(redis_url)
    queue = connection.SimpleQueue(name)
    queue.put({"n": 1})
    message = queue.get(timeout=5)
    try:
        yield message, server
    finally:
        server.delete(name, f"_kombu.binding.{name}")
        server.hdel("unacked", message.delivery_tag)
        server.zrem("unacked_index", message.delivery_tag)
        connection.release()


def test_an_ack_on_a_released_transport_is_a_connection_error_and_the_message_stays(
    taken: tuple[Any, redis.Redis],
) -> None:
    message, server = taken
    # When Celery has released the transport (Redis was lost) and a task's ack arrives late
    message.channel.connection.client = None  # what kombu's Connection._do_close_transport does
    # Then the ack fails as a lost connection does (Celery logs it and goes on)
    with pytest.raises(redis.exceptions.ConnectionError):
        message.ack()
    # And the message is still unacknowledged on Redis: the visibility restore brings it back
    assert server.hexists("unacked", message.delivery_tag)


def test_a_closed_channel_restores_nothing_and_raises_nothing(
    taken: tuple[Any, redis.Redis],
) -> None:
    message, server = taken
    channel = message.channel
    transport = channel.connection
    # When the channel has lost its connection (kombu's close_channel sets it to None) and
    # Celery restores the channel's unacked messages
    channel.connection = None
    try:
        channel.qos.restore_unacked()
    finally:
        channel.connection = transport  # for the fixture's own release
    # Then nothing was raised, and the message waits in the unacked hash
    assert server.hexists("unacked", message.delivery_tag)
