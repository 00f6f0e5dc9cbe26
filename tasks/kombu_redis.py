"""kombu's Redis transport with one fault fixed: the worker no longer dies when Redis does.

kombu 5.7: when the Redis server dies, Celery closes the broken connection, and closing its
channel restores the channel's unacknowledged messages through a client built from a transport
that has already been released, which raises `AttributeError: 'NoneType' object has no
attribute 'hostname'`. Celery treats it as unrecoverable and the worker exits (docs/faults.md).
Here that restore is given up instead: the messages stay in the unacked hash on Redis, from
where Celery's visibility-timeout restore brings them back, and the dispatcher re-arms their
deadlines after `SLATIMER_REDISPATCH_GRACE` anyway. `tasks.app` registers this transport for
`redis://` and `rediss://` URLs.
"""

from __future__ import annotations

from typing import Any

import structlog
from kombu.transport import redis as kombu_redis

log = structlog.get_logger("slatimer.broker")


class QoS(kombu_redis.QoS):
    def restore_unacked(self, client: Any = None) -> None:
        try:
            super().restore_unacked(client)  # type: ignore[no-untyped-call]
        except AttributeError as error:  # the released transport: see the module docstring
            log.warning(
                "unacked messages left to the visibility-timeout restore",
                messages=len(self._delivered),
                error=repr(error)[:200],
            )


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
