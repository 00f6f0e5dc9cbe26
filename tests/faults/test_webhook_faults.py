"""The merchant's webhook receiver down, slow (past the read timeout) and answering 500, 429 and
410, with real `slatimer worker` and `slatimer dispatcher` processes on a private PostgreSQL and
Redis: every alert is delivered at least once, always under one id, each signature valid."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from config.policy import load_policy
from store.sql.tables import AlertRow
from tests.builders import collected, created
from tests.conftest import sql_uow
from tests.faults.figures import FIGURES
from tests.faults.harness import duplicates
from tests.faults.servers import PrivateRedis
from tests.integration.test_alerts_e2e import Receiver
from tests.runtime import FAST_POLICY, processes, runtime_env, wait_for
from worker.service.handlers import record_event

pytestmark = pytest.mark.faults
POLICY = load_policy(FAST_POLICY)  # an hour is 50 ms: 120 h = 6 s
LIMIT = timedelta(seconds=6)
READ_TIMEOUT = 0.5


def behaviour(path: str, count: int) -> tuple[int, dict[str, str]]:
    """What each merchant's endpoint does with its `count`-th request."""
    if path == "m-slow" and count < 3:
        time.sleep(READ_TIMEOUT * 2)  # past the read timeout: a failure, retried
        return 200, {}
    if path == "m-500" and count < 4:
        return 500, {}
    if path == "m-429" and count < 2:
        return 429, {"retry-after": "1"}
    if path == "m-410" and count < 1:
        return 410, {}
    return 204, {}


MERCHANTS = ["m-down", "m-slow", "m-500", "m-429", "m-410"]


def register(env: dict[str, str], merchant: str, url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "merchants", "add", merchant, "--url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split("keep it safe): ")[1].strip()


def enable(env: dict[str, str], merchant: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "merchants", "enable", merchant],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def violations(engine: Engine) -> int:
    return sum(alert.kind == "violation" for alert in alerts(engine))


def alerts(engine: Engine) -> list[AlertRow]:
    with engine.connect() as connection:
        return list(connection.execute(select(AlertRow.__table__).order_by(AlertRow.id)))


def test_a_receiver_down_slow_or_failing_still_gets_every_alert_once_under_one_id(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis
) -> None:
    # Given five merchants whose endpoints misbehave, each in its own way
    env = runtime_env(
        pg.url.render_as_string(False),
        private_redis.url,
        SLATIMER_WEBHOOK_ALLOW="127.0.0.1",
        SLATIMER_ALERT_RETRY_BASE="0.05",
        SLATIMER_ALERT_RETRY_CAP="1",
        SLATIMER_ALERT_MAX_ATTEMPTS="60",
        SLATIMER_ALERT_LEASE="5",
        SLATIMER_ALERT_READ_TIMEOUT=str(READ_TIMEOUT),
        SLATIMER_LOG_LEVEL="WARNING",
    )
    receiver, down = Receiver(behaviour=behaviour), Receiver()
    receiver.start()
    for merchant in MERCHANTS:
        target = down if merchant == "m-down" else receiver
        target.secrets[merchant] = register(env, merchant, target.url(merchant))
    # When each has two orders that go uncollected (a violation each, and the warnings the
    # runtime is up in time to send), one of them collected in time but learnt late (a
    # retraction)
    start = datetime.now(UTC) + timedelta(seconds=6) - LIMIT
    with sql_uow(pg) as uow:
        for number, merchant in enumerate(MERCHANTS):
            for order in ("a", "b"):
                event = created(
                    f"{merchant}-{order}", start + timedelta(seconds=number * 0.1), merchant
                )
                record_event(event, uow, datetime.now(UTC), POLICY)
        uow.commit()
    try:
        with processes(env, tmp_path) as children:
            children.start("worker")
            children.start("dispatcher")
            wait_for(lambda: violations(pg) == 2 * len(MERCHANTS), 60, "every violation alert")
            with sql_uow(pg) as uow:
                late = collected("m-500-a", start + LIMIT - timedelta(seconds=0.5))
                record_event(late, uow, datetime.now(UTC), POLICY)
                uow.commit()
            FIGURES.fault("webhook receiver down", 1)
            FIGURES.fault("webhook slow past the read timeout", 3)
            FIGURES.fault("webhook 500", 4)
            FIGURES.fault("webhook 429 + Retry-After", 2)
            FIGURES.fault("webhook 410 (then `merchants enable`)", 1)
            time.sleep(3)
            down.start()
            wait_for(lambda: any(a.state == "disabled" for a in alerts(pg)), 30, "410: parked")
            enable(env, "m-410")
            try:
                wait_for(
                    lambda: {a.state for a in alerts(pg)} == {"delivered"}, 90, "all delivered"
                )
            except AssertionError as error:
                rows = [(a.merchant_id, a.kind, a.state, a.attempts) for a in alerts(pg)]
                raise AssertionError(f"{error}\n{rows}\n{children.logs()}") from None
            time.sleep(1)
    finally:
        receiver.stop()
        down.stop()
    # Then every alert arrived at least once, each id with one body's worth of hits, all signed
    outbox = {a.alert_id: a for a in alerts(pg)}
    hits = [*receiver.hits, *down.hits]
    delivered = defaultdict(set)
    for hit in hits:
        if 200 <= hit.status < 300:
            delivered[hit.webhook_id].add((hit.type, hit.order_id, hit.path))
    assert set(delivered) == set(outbox)
    assert all(len(seen) == 1 for seen in delivered.values())
    assert all(hit.verified for hit in hits)
    assert any(a.kind == "retraction" for a in outbox.values())
    assert sum(duplicates(pg).values()) == 0
    FIGURES.add("alerts_delivered", len(outbox))
