"""kombu's Redis transport with one fault fixed: the worker no longer dies when Redis does.

kombu 5.7: when the Redis server dies, Celery closes the broken connection and releases its
transport, but the channel lives on in callbacks that still reach Redis through it: closing it
restores its unacknowledged messages, and a task that finishes in a pool child acknowledges its
message. Each builds a client from the released transport and raises `AttributeError: 'NoneType'
object has no attribute 'hostname'` (or `'client'`), which Celery treats as unrecoverable: the
worker exits (docs/faults.md).

Here a released channel says what it is instead: `ReleasedChannel`, a Redis `ConnectionError`,
which Celery handles as the lost connection it is (an acknowledgement is logged as not made, as
for any broker outage). The messages stay in the unacked hash on Redis, from where Celery's
visibility-timeout restore brings them back (the check task is idempotent), and the dispatcher
re-arms their deadlines after `SLATIMER_REDISPATCH_GRACE` anyway. `tasks.app` registers this
transport for `redis://` and `rediss://` URLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

log = structlog.get_logger("slatimer.broker")


class ReleasedChannel(RedisConnectionError):
    """A Redis call on a channel whose connection Celery has already released."""


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except ReleasedChannel as error:  # closing after the connection was lost
            log.warning(
                "unacked messages left to the visibility-timeout restore",
                messages=len(self._delivered),
                error=repr(error)[:200],
            )


class Channel(kombu_redis.Channel):
    QoS = QoS

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """Every Redis call of the channel and its QoS without a client of its own comes
        through here: the one place to refuse a released transport."""
        if client is None and (self.connection is None or self.connection.client is None):
            raise ReleasedChannel("the channel's connection was released (Redis was lost)")
        with super().conn_or_acquire(client) as acquired:
            yield acquired


class Transport(kombu_redis.Transport):
    Channel = Channel
