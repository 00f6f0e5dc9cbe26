"""The durable timers end to end: real PostgreSQL, real Redis broker, a real Celery worker and
dispatcher process. Policy limits scaled so an hour is 50 ms (tests/policies/fast.toml)."""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Exchange, Queue
from sqlalchemy import Engine, func, select

from config.policy import load_policy
from config.settings import Settings
from models.events import Event, canonical_body
from models.policy import Policy
from store.sql.engine import make_engine
from store.sql.tables import DeadlineRow, InboxRow, OutcomeRow
from tests.builders import (
    cancel_requested,
    cancel_reviewed,
    collected,
    created,
    customs_failed,
    refunded,
    stockout,
)
from tests.conftest import server_missing, sql_uow, without_warnings
from tests.runtime import (
    FAST_POLICY,
    comparable,
    processes,
    recorded_outcomes,
    runtime_env,
    wait_for,
)
from worker.ingest.consumer import connect, publish_events
from worker.service.handlers import record_event
from worker.service.replay import Replayer

pytestmark = pytest.mark.integration
POLICY = load_policy(FAST_POLICY)
HOUR = timedelta(milliseconds=50)
REDIS_URL = os.environ.get("SLATIMER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture()
def broker_url() -> Iterator[str]:
    """A Redis database of its own (14), emptied before and after."""
    url = REDIS_URL.rsplit("/", 1)[0] + "/14"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as error:
        server_missing(f"Redis at {url}", error)
    client.flushdb()
    yield url
    client.flushdb()


def scenario(t0: datetime, hour: timedelta = HOUR) -> list[tuple[datetime, Event]]:
    """(when it reaches slatimer, event): two merchants' orders, one of each outcome."""

    def at(hours: float) -> datetime:
        return t0 + hours * hour

    timeline = [
        created("o1", at(0), "m-1"),  # never collected: 2.1.1 at 120 h, serious (o3 first)
        created("o2", at(0), "m-1"),
        collected("o2", at(100)),  # on time
        created("o3", at(10), "m-1"),
        stockout("o3", at(20)),  # no contact: 3.2.2 at 58 h
        created("o4", at(0), "m-2"),
        cancel_requested("o4", at(5)),  # never reviewed: 2.2.3 at 29 h
        created("o5", at(0), "m-2"),
        collected("o5", at(8)),
        customs_failed("o5", at(10)),
        refunded("o5", at(40)),  # late: 2.3.1 at 34 h
        created("o6", at(0), "m-2"),  # collected on time, but we learn it at 150 h
        created("o7", at(0), "m-2"),
        cancel_requested("o7", at(2)),
        cancel_reviewed("o7", at(3), "rejected"),  # unshipped: escalates at once
        created("o8", at(149), "m-2"),  # moves replay's clock past o6's deadline, as real time does
    ]
    arrivals = [(event.occurred_at, event) for event in timeline]
    arrivals.append((at(150), collected("o6", at(110))))
    return sorted(arrivals, key=lambda pair: pair[0])


def replay_of(
    arrivals: list[tuple[datetime, Event]], until: datetime, policy: Policy = POLICY
) -> list[object]:
    replayer = Replayer(policy)
    for _arrival, event in arrivals:
        replayer.feed(event)
    return replayer.finish(until).outcomes


def open_deadlines_due_by(engine: Engine, moment: datetime) -> int:
    with engine.connect() as connection:
        return (
            connection.scalar(
                select(func.count())
                .select_from(DeadlineRow)
                .where(DeadlineRow.state.in_(("pending", "enqueued")), DeadlineRow.due_at <= moment)
            )
            or 0
        )


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_events_from_the_order_queue_to_outcomes_equal_replay(
    broker: str,
    request: pytest.FixtureRequest,
    make_order_queue: Any,
    pg_engine: Engine,
    tmp_path: Path,
) -> None:
    # Given ingest, a worker and a dispatcher on a real broker and PostgreSQL
    url = request.getfixturevalue("redis_url" if broker == "redis" else "amqp_url")
    queue = make_order_queue(url, pg_engine.url.render_as_string(False))
    timer_queue = f"{queue.settings.order_queue}.timers"
    env = {
        **runtime_env(queue.settings.database_url, url, SLATIMER_TIMER_QUEUE=timer_queue),
        **{k: v for k, v in queue.env.items() if k.startswith("SLATIMER_ORDER_")},
    }
    settings = queue.settings.model_copy(update={"timer_queue": timer_queue})
    try:
        with processes(env, tmp_path) as children:
            for role in ("ingest", "worker", "dispatcher"):
                children.start(role)
            children.wait_ready("ingest", "worker", "dispatcher")
            t0 = datetime.now(UTC) + timedelta(seconds=1)
            arrivals = scenario(t0)
            end = t0 + 160 * HOUR
            # When the producer publishes each event as plain JSON when it happens
            publish_in_real_time(arrivals, settings)
            try:
                wait_for(lambda: inbox_count(pg_engine) == len(arrivals), 30, "every event in")
                wait_for(lambda: open_deadlines_due_by(pg_engine, end) == 0, 30, "every clock")
                wait_for(lambda: datetime.now(UTC) > end, 10, "the end of the scenario")
            except AssertionError:
                raise AssertionError(children.logs()) from None
    finally:
        delete_queue(settings, timer_queue)
    # Then the store holds exactly what replay computes from the same events
    expected = comparable(replay_of(arrivals, end))
    assert {o["rule"] for o in expected} == {
        "collection_overdue",
        "stockout_contact_overdue",
        "cancellation_review_overdue",
        "customs_refund_overdue",
        "cancellation_rejected_unshipped",
        "standing_threshold",  # m-1's 4 + 8 points reach the 12-point warning
    }
    assert any(o["kind"] == "retraction" for o in expected)
    assert recorded_outcomes(pg_engine) == expected


def publish_in_real_time(arrivals: list[tuple[datetime, Event]], settings: Settings) -> None:
    with connect(settings) as connection:
        for arrival, event in arrivals:
            time.sleep(max(0.0, (arrival - datetime.now(UTC)).total_seconds()))
            publish_events(connection, [canonical_body(event)], settings)


def inbox_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(InboxRow)) or 0


def delete_queue(settings: Settings, name: str) -> None:
    with connect(settings) as connection:
        Queue(name, Exchange(name), routing_key=name)(connection.default_channel).delete()


def no_warnings_policy(directory: Path) -> Path:
    """The fast policy without pre-breach warnings: for tests of the timer machinery alone."""
    text = FAST_POLICY.read_text()
    start = text.index("[warning_leads]")
    end = text.index("[points.out_of_stock]")
    path = directory / "no-warnings.toml"
    path.write_text(text[:start] + "[warning_leads]\n\n" + text[end:])
    return path


def mechanics_env(engine: Engine, broker: str, directory: Path, **extra: str) -> dict[str, str]:
    """The environment of the timer-machinery tests: no warnings, to count deadlines alone."""
    policy = str(no_warnings_policy(directory))
    return runtime_env(
        engine.url.render_as_string(False), broker, SLATIMER_POLICY_FILE=policy, **extra
    )


def many_orders_due_soon(engine: Engine, count: int, due_in: timedelta) -> datetime:
    """`count` orders whose 120 h collection deadline falls `due_in` from now."""
    t0 = datetime.now(UTC) + due_in - 120 * HOUR
    with sql_uow(engine) as uow:
        for number in range(count):
            order = created(f"k{number}", t0 + number * timedelta(milliseconds=10), f"m{number}")
            record_event(order, uow, order.occurred_at, without_warnings(POLICY))
        uow.commit()
    return t0 + 120 * HOUR + count * timedelta(milliseconds=10)


def violation_count(engine: Engine, kind: str = "violation") -> int:
    with engine.connect() as connection:
        query = select(func.count()).select_from(OutcomeRow).where(OutcomeRow.kind == kind)
        return connection.scalar(query) or 0


def test_a_worker_killed_with_sigkill_mid_flight_loses_no_deadline_and_fires_none_twice(
    pg_engine: Engine, broker_url: str, tmp_path: Path
) -> None:
    # Given 150 deadlines falling due over 1.5 s, four seconds from now, handed to a worker
    env = mechanics_env(pg_engine, broker_url, tmp_path)
    last_due = many_orders_due_soon(pg_engine, 150, timedelta(seconds=4))
    with processes(env, tmp_path) as children:
        children.start("worker")
        children.start("dispatcher")
        # When the worker is killed with SIGKILL while it holds their ETA tasks, and restarted
        wait_for(lambda: datetime.now(UTC) > last_due - timedelta(seconds=1), 20, "mid-flight")
        children.kill("worker")
        fired_before_restart = violation_count(pg_engine)
        children.start("worker", "worker-2")
        try:
            wait_for(lambda: violation_count(pg_engine) == 150, 60, "all 150 violations")
            wait_for(lambda: open_deadlines_due_by(pg_engine, last_due) == 0, 30, "no open clock")
        except AssertionError:
            raise AssertionError(children.logs()) from None
        time.sleep(2)  # any redelivered duplicate has had time to run
    # Then every deadline fired exactly once
    assert fired_before_restart < 150, "the kill should have interrupted the wave"
    assert violation_count(pg_engine) == 150
    with pg_engine.connect() as connection:
        states = connection.execute(
            select(DeadlineRow.state, func.count()).group_by(DeadlineRow.state)
        ).all()
    assert dict(states) == {"fired": 150}


def queued_refs(broker: str) -> list[tuple[str, ...]]:
    """Every deadline reference in the check-task messages waiting on the Redis queue."""
    client = redis.Redis.from_url(broker)
    refs = []
    for raw in client.lrange("slatimer.timers", 0, -1):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        refs += [tuple(ref) for ref in args[0]]
    return refs


def test_two_dispatcher_replicas_never_send_a_deadline_twice(
    pg_engine: Engine, broker_url: str, tmp_path: Path
) -> None:
    # Given 400 deadlines due within the horizon, and no worker to take the tasks
    env = mechanics_env(
        pg_engine,
        broker_url,
        tmp_path,
        SLATIMER_REDISPATCH_GRACE="600",
        SLATIMER_DISPATCH_BATCH="20",
    )
    many_orders_due_soon(pg_engine, 400, timedelta(seconds=1))
    # When two dispatchers race for them
    with processes(env, tmp_path) as children:
        children.start("dispatcher", "dispatcher-a")
        children.start("dispatcher", "dispatcher-b")
        try:
            wait_for(lambda: len(queued_refs(broker_url)) >= 400, 30, "400 queued deadlines")
        except AssertionError:
            raise AssertionError(children.logs()) from None
        time.sleep(1)  # a double send would show up by now
    # Then each deadline was sent exactly once, and both replicas took part
    refs = queued_refs(broker_url)
    assert len(refs) == 400
    assert len(set(refs)) == 400
    logs = children.logs()
    assert logs.count("dispatcher started") == 2


def test_after_an_outage_every_overdue_deadline_fires_once_with_its_original_time(
    pg_engine: Engine, broker_url: str, tmp_path: Path
) -> None:
    # Given 50 deadlines that fell due while no worker or dispatcher was running
    last_due = many_orders_due_soon(pg_engine, 50, -timedelta(seconds=30))
    assert violation_count(pg_engine) == 0 and open_deadlines_due_by(pg_engine, last_due) == 50
    env = mechanics_env(pg_engine, broker_url, tmp_path)
    # When the runtime starts again
    with processes(env, tmp_path) as children:
        children.start("worker")
        children.start("dispatcher")
        try:
            wait_for(lambda: violation_count(pg_engine) == 50, 30, "50 overdue violations")
        except AssertionError:
            raise AssertionError(children.logs()) from None
    # Then each fired once, dated at its own deadline, not at the restart
    with pg_engine.connect() as connection:
        ats = connection.execute(select(OutcomeRow.order_id, OutcomeRow.at)).all()
    assert len(ats) == 50
    for order_id, at in ats:
        number = int(order_id.removeprefix("k"))
        assert at == last_due - (50 - number) * timedelta(milliseconds=10)


def scaled_policy(directory: Path, hour: timedelta) -> Path:
    """The fast policy with another length of an hour (the file states 1 h = 50 ms)."""
    factor = hour / HOUR
    text = re.sub(
        r'"([0-9.]+)s"',
        lambda seconds: f'"{float(seconds.group(1)) * factor:g}s"',
        FAST_POLICY.read_text(),
    )
    path = directory / "scaled.toml"
    path.write_text(text)
    return path


def test_slatimer_run_on_embedded_defaults_matches_replay(tmp_path: Path) -> None:
    # Given `slatimer run` with no server at all: SQLite store, kombu's SQLite transport, which
    # polls once a second — so an hour of the rules is 200 ms here, not 50
    hour = timedelta(milliseconds=200)
    policy_file = scaled_policy(tmp_path, hour)
    database_url = f"sqlite:///{tmp_path / 'slatimer.db'}"
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    env = runtime_env(database_url, broker, SLATIMER_POLICY_FILE=str(policy_file))
    settings = Settings(broker_url=broker, database_url=database_url)
    t0 = datetime.now(UTC) + timedelta(seconds=8)
    arrivals = scenario(t0, hour)
    end = t0 + 160 * hour
    engine = make_engine(database_url)
    with processes(env, tmp_path) as children:
        children.start("run")
        # When the producer publishes the scenario to the embedded queue
        publish_in_real_time(arrivals, settings)
        try:
            wait_for(lambda: inbox_count(engine) == len(arrivals), 30, "every event in")
            wait_for(lambda: open_deadlines_due_by(engine, end) == 0, 30, "every clock")
            wait_for(lambda: datetime.now(UTC) > end, 10, "the end of the scenario")
        except AssertionError:
            raise AssertionError(children.logs()) from None
    # Then the outcomes are replay's
    policy = load_policy(policy_file)
    assert policy.limits.spot_collection == 120 * hour
    assert recorded_outcomes(engine) == comparable(replay_of(arrivals, end, policy))
    engine.dispose()
