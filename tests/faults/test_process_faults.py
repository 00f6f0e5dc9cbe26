"""Kill, crash, cut and stop the runtime while events flow and deadlines fall due; after the
drain nothing is lost and nothing is counted twice (tests/faults/harness.py, check_after_drain).

Real `python -m worker ingest | worker | dispatcher` processes on a private PostgreSQL and a
private Redis (AOF), policy scaled so an hour is SLATIMER_FAULTS_HOUR_MS (default 100 ms)."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from config.settings import Settings
from tests.faults.figures import FIGURES
from tests.faults.harness import (
    HOUR,
    SPREAD,
    Producer,
    check_after_drain,
    drain,
    fault_env,
    inbox_ids,
    make_stream,
    open_deadlines_due_by,
    restart,
    scaled_policy,
    start_all,
)
from tests.faults.servers import PrivatePostgres, PrivateRedis, Proxy
from tests.runtime import processes, wait_for

pytestmark = pytest.mark.faults
SEED = int(time.time())  # printed on failure through the order ids (s<seed>-o<n>)


@contextmanager
def chaos(
    action: Callable[[random.Random], None], every: tuple[float, float], seed: int
) -> Iterator[None]:
    """Run `action` at random intervals in a thread until the block ends; its errors fail."""
    stop = threading.Event()
    errors: list[BaseException] = []
    rng = random.Random(seed)

    def loop() -> None:
        while not stop.wait(rng.uniform(*every)):
            try:
                action(rng)
            except BaseException as error:  # noqa: BLE001 - re-raised below
                errors.append(error)
                return

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)
    if errors:
        raise errors[0]


def run_stream(
    tmp_path: Path, pg: Engine, broker_url: str, seed: int, processes_broker: str | None = None,
    spread: float = SPREAD,
) -> tuple[dict[str, str], Producer, Path]:  # fmt: skip
    """The runtime's environment and a producer of a fresh stream starting in 3 s."""
    policy_file = scaled_policy(tmp_path)
    env = fault_env(pg.url.render_as_string(False), processes_broker or broker_url, policy_file)
    settings = Settings(broker_url=broker_url, database_url=env["SLATIMER_DATABASE_URL"])
    stream = make_stream(datetime.now(UTC) + timedelta(seconds=3), seed, spread=spread)
    return env, Producer(settings, stream), policy_file


@pytest.mark.wip
@pytest.mark.xfail(
    strict=False,
    reason="UNDIAGNOSED (issue 6 left open): the standing outcomes differed from replay in the "
    "last full run; to be diagnosed before this mark is removed",
)
def test_worker_and_ingest_killed_at_random_moments_lose_nothing(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis
) -> None:
    # Given the runtime and a producer publishing a stream whose deadlines fall due throughout
    env, producer, policy_file = run_stream(tmp_path, pg, private_redis.url, SEED)

    def kill_one(rng: random.Random) -> None:
        name = rng.choice(["ingest", "worker"])
        restart(children, name)
        FIGURES.fault(f"SIGKILL {name}")

    with processes(env, tmp_path) as children:
        start_all(children)
        producer.start()
        # When the worker or ingest is killed with SIGKILL every 1.5-4 s, and restarted
        with chaos(kill_one, (1.5, 4.0), SEED):
            wait_until(producer.stream.end)
        drain(pg, producer, children)
    # Then nothing is lost or counted twice, and the outcomes are replay's
    check_after_drain(pg, producer, policy_file)


@pytest.mark.wip
@pytest.mark.xfail(
    strict=False,
    reason="UNDIAGNOSED (issue 6 left open): the standing outcomes differed from replay in the "
    "last full run; to be diagnosed before this mark is removed",
)
def test_a_dispatcher_killed_mid_claim_while_a_replica_races_it(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis
) -> None:
    # Given two dispatcher replicas racing for the same deadline rows
    env, producer, policy_file = run_stream(tmp_path, pg, private_redis.url, SEED + 1)

    def kill_dispatcher(rng: random.Random) -> None:
        restart(children, rng.choice(["dispatcher-0", "dispatcher-1"]))
        FIGURES.fault("SIGKILL dispatcher")

    with processes(env, tmp_path) as children:
        start_all(children, dispatchers=2)
        producer.start()
        # When one of them is killed with SIGKILL every 0.5-2 s (mid-claim: a pass every 0.1 s)
        with chaos(kill_dispatcher, (0.5, 2.0), SEED + 1):
            wait_until(producer.stream.end)
        drain(pg, producer, children)
    # Then no deadline is lost or fired twice
    check_after_drain(pg, producer, policy_file)


@pytest.mark.wip
@pytest.mark.xfail(
    strict=False,
    reason="kombu 5.7 / celery 5.7: after `kill -9` of Redis the `slatimer worker` process often "
    "exits (AttributeError: 'NoneType' object has no attribute 'hostname' in kombu's redis "
    "restore_unacked on close); without a supervisor its timers then wait for a restart",
)
def test_redis_killed_and_restarted_during_publishing_and_processing(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis
) -> None:
    # Given the runtime and a producer on a Redis with AOF (appendfsync everysec)
    env, producer, policy_file = run_stream(tmp_path, pg, private_redis.url, SEED + 2)

    def crash_redis(rng: random.Random) -> None:
        private_redis.crash()
        producer.broker_crashed()  # a producer re-sends what the last second may have lost
        time.sleep(rng.uniform(0.2, 1.5))
        private_redis.start()
        FIGURES.fault("kill -9 redis")

    with processes(env, tmp_path) as children:
        start_all(children)
        producer.start()
        # When Redis is killed with SIGKILL every 3-6 s and restarted on its AOF
        with chaos(crash_redis, (3.0, 6.0), SEED + 2):
            wait_until(producer.stream.end)
        drain(pg, producer, children)
        pids = {name: child.poll() for name, child in children.running.items()}
    # Then nothing is lost or counted twice, and no process gave up
    assert set(pids.values()) == {None}, pids
    check_after_drain(pg, producer, policy_file)


@pytest.mark.wip
@pytest.mark.xfail(
    strict=False,
    reason="passed alone twice, but in one full CI run the standing outcomes differed from "
    "replay after the crashes: oracle timing margin or a real divergence, not yet diagnosed",
)
def test_postgres_crashed_and_restarted_during_processing(
    tmp_path: Path, pg: Engine, private_pg: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    # Given the runtime and a producer
    env, producer, policy_file = run_stream(tmp_path, pg, private_redis.url, SEED + 3)

    def crash_postgres(rng: random.Random) -> None:
        private_pg.crash()  # pg_ctl stop -m immediate: in-flight transactions are gone
        time.sleep(rng.uniform(0.5, 2.0))
        private_pg.start()
        FIGURES.fault("pg_ctl stop -m immediate")

    with processes(env, tmp_path) as children:
        start_all(children)
        producer.start()
        # When PostgreSQL crashes every 3-6 s and comes back (recovery) after 0.5-2 s
        with chaos(crash_postgres, (3.0, 6.0), SEED + 3):
            wait_until(producer.stream.end)
        drain(pg, producer, children)
        pids = {name: child.poll() for name, child in children.running.items()}
    # Then every process reconnected (none exited), and nothing was acknowledged before commit
    assert set(pids.values()) == {None}, pids
    check_after_drain(pg, producer, policy_file)


@pytest.mark.wip
@pytest.mark.xfail(
    strict=False,
    reason="a connection reset or stall between `slatimer ingest` and Redis can lose a message "
    "Redis popped (BRPOP) but the consumer never received, and a stalled worker connection "
    "stays blind ~50 s (kombu's BRPOP stale check); see docs/faults.md",
)
def test_a_network_cut_between_the_processes_and_the_broker(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis, proxy: Proxy
) -> None:
    # Given ingest, worker and dispatcher reaching Redis through a proxy; the producer direct
    env, producer, policy_file = run_stream(
        tmp_path, pg, private_redis.url, SEED + 4, processes_broker=proxy.url
    )

    def cut_or_stall(rng: random.Random) -> None:
        if rng.random() < 0.6:
            proxy.cut(rng.uniform(0.3, 2.0))
            FIGURES.fault("network cut (reset)")
        else:
            proxy.stall(rng.uniform(0.5, 2.0))
            FIGURES.fault("network stall")

    with processes(env, tmp_path) as children:
        start_all(children)
        producer.start()
        # When every connection through the proxy is reset or stalled every 2-5 s
        with chaos(cut_or_stall, (2.0, 5.0), SEED + 4):
            wait_until(producer.stream.end)
        drain(pg, producer, children)
        pids = {name: child.poll() for name, child in children.running.items()}
    assert set(pids.values()) == {None}, pids
    check_after_drain(pg, producer, policy_file)


@pytest.mark.wip
@pytest.mark.xfail(
    strict=False,
    reason="UNDIAGNOSED (issue 6 left open): the standing outcomes differed from replay in the "
    "last full run; to be diagnosed before this mark is removed",
)
def test_after_a_six_day_outage_every_overdue_deadline_fires_once_at_its_time(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis
) -> None:
    # Given the runtime has taken in every order of a stream (created within 1 s) and its early
    # evidence; the late evidence (150 h) is held back
    env, producer, policy_file = run_stream(tmp_path, pg, private_redis.url, SEED + 5, spread=1)
    stream = producer.stream
    first = stream.arrivals[0][0]
    late = [pair for pair in stream.arrivals if pair[0] > first + 100 * HOUR]
    producer.stream = type(stream)([p for p in stream.arrivals if p not in late], stream.end)
    with processes(env, tmp_path) as children:
        start_all(children)
        producer.start()
        producer.wait(60)
        wanted = {event.event_id for event in producer.confirmed}
        wait_for(lambda: inbox_ids(pg) >= wanted, 30, "the early events in")
        # When everything stops (SIGKILL) for six scaled days, while every deadline falls due
        for name in list(children.running):
            children.kill(name, signal.SIGKILL)
        FIGURES.fault("6-day outage (everything stopped)")
        time.sleep((144 * HOUR).total_seconds())
        back = datetime.now(UTC)
        start_all(children)
        wait_for(lambda: open_deadlines_due_by(pg, back) == 0, 60, "every overdue clock")
        # and then the late evidence arrives
        rest = Producer(producer.settings, type(stream)(late, stream.end))
        rest.start()
        rest.wait(60)
        producer.confirmed += rest.confirmed
        producer.stream = stream
        drain(pg, producer, children)
    # Then every overdue deadline fired once, with its original `at`: violations, escalations
    # and retractions equal replay's one for one (warnings whose deadline passed while down are
    # not sent, by design: a breach says more than a warning)
    check_after_drain(
        pg, producer, policy_file, exact=("violation", "escalation", "retraction"), not_before=back
    )


def wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))
