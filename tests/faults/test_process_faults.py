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
    Outage,
    Producer,
    Supervised,
    check_after_drain,
    drain,
    fault_env,
    inbox_ids,
    make_stream,
    open_deadlines_due_by,
    scaled_policy,
    start_all,
    supervised,
)
from tests.faults.servers import PrivatePostgres, PrivateRabbit, PrivateRedis, Proxy
from tests.runtime import wait_for

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
    tmp_path: Path, pg: Engine, broker_url: str, seed: int, spread: float = SPREAD
) -> tuple[dict[str, str], Producer, Path]:
    """The runtime's environment and a producer of a fresh stream starting in 3 s."""
    policy_file = scaled_policy(tmp_path)
    env = fault_env(pg.url.render_as_string(False), broker_url, policy_file)
    settings = Settings(broker_url=broker_url, database_url=env["SLATIMER_DATABASE_URL"])
    stream = make_stream(datetime.now(UTC) + timedelta(seconds=3), seed, spread=spread)
    return env, Producer(settings, stream), policy_file


Action = Callable[[Supervised, Producer, random.Random], None]
"""One fault, injected at a random moment: (the runtime's children, the producer, a seeded rng)."""


def under_chaos(
    tmp_path: Path, pg: Engine, broker_url: str, seed: int, action: Action,
    every: tuple[float, float], dispatchers: int = 1, broker_for: dict[str, str] | None = None,
    outages: list[Outage] | None = None,
) -> None:  # fmt: skip
    """The shape of every chaos test: the runtime (supervised) and a producer publishing a
    fresh stream whose deadlines fall due throughout; `action` every `every` seconds until the
    stream ends; then drain, and the oracle: no process exit but the known one, nothing lost or
    counted twice, the outcomes replay's."""
    env, producer, policy_file = run_stream(tmp_path, pg, broker_url, seed)
    with supervised(env, tmp_path, broker_for) as children:
        start_all(children, dispatchers)
        producer.start()
        with chaos(lambda rng: action(children, producer, rng), every, seed):
            wait_until(producer.stream.end)
        drain(pg, producer, children)
    assert not children.unexplained_exits(), children.unexplained_exits()
    check_after_drain(pg, producer, policy_file, outages=outages)


def crash_and_restart(
    server: PrivatePostgres | PrivateRedis | PrivateRabbit,
    fault: str,
    down: tuple[float, float],
    resend: bool = False,
    outages: list[Outage] | None = None,
) -> Action:
    """Crash the server, leave it down for a while, start it on its data again (each outage
    noted in `outages`, so lateness is measured from the restart). With `resend` the producer
    re-sends what it published just before (Redis fsyncs its AOF every second)."""

    def action(_children: Supervised, producer: Producer, rng: random.Random) -> None:
        crashed = datetime.now(UTC)
        server.crash()
        if resend:
            producer.broker_crashed()
        time.sleep(rng.uniform(*down))
        server.start()
        if outages is not None:
            outages.append((crashed, datetime.now(UTC)))
        FIGURES.fault(fault)

    return action


@pytest.mark.parametrize(
    "victims",
    [
        ("worker",),
        ("ingest", "worker"),
    ],
)
def test_worker_and_ingest_killed_at_random_moments_lose_nothing(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis, victims: tuple[str, ...]
) -> None:
    # When the worker (or ingest) is killed with SIGKILL every 1.5-4 s, and restarted
    def kill_one(children: Supervised, _producer: Producer, rng: random.Random) -> None:
        name = rng.choice(victims)
        children.restart(name)
        FIGURES.fault(f"SIGKILL {name}")

    under_chaos(tmp_path, pg, private_redis.url, SEED, kill_one, (1.5, 4.0))


def test_a_dispatcher_killed_mid_claim_while_a_replica_races_it(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis
) -> None:
    # Given two dispatcher replicas racing for the same deadline rows
    # When one of them is killed with SIGKILL every 0.5-2 s (mid-claim: a pass every 0.1 s)
    def kill_dispatcher(children: Supervised, _producer: Producer, rng: random.Random) -> None:
        children.restart(rng.choice(["dispatcher-0", "dispatcher-1"]))
        FIGURES.fault("SIGKILL dispatcher")

    under_chaos(tmp_path, pg, private_redis.url, SEED + 1, kill_dispatcher, (0.5, 2.0), 2)


def test_redis_killed_and_restarted_during_publishing_and_processing(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis
) -> None:
    # Given Redis with AOF (appendfsync everysec), as docs/runtime.md recommends
    # When it is killed with SIGKILL every 3-6 s and restarted on its AOF after 0.2-1.5 s
    outages: list[Outage] = []
    crash = crash_and_restart(private_redis, "kill -9 redis", (0.2, 1.5), True, outages)
    under_chaos(tmp_path, pg, private_redis.url, SEED + 2, crash, (3.0, 6.0), outages=outages)


def test_rabbitmq_killed_and_restarted_during_publishing_and_processing(
    tmp_path: Path, pg: Engine, private_rabbit: PrivateRabbit
) -> None:
    # Given RabbitMQ as the broker (durable queues, persistent messages, publisher confirms)
    # When its node is killed with SIGKILL every 4-8 s and started again after 0.2-1.5 s
    outages: list[Outage] = []
    crash = crash_and_restart(private_rabbit, "kill -9 rabbitmq", (0.2, 1.5), outages=outages)
    under_chaos(tmp_path, pg, private_rabbit.url, SEED + 6, crash, (4.0, 8.0), outages=outages)


def test_postgres_crashed_and_restarted_during_processing(
    tmp_path: Path, pg: Engine, private_pg: PrivatePostgres, private_redis: PrivateRedis
) -> None:
    # When PostgreSQL crashes (pg_ctl stop -m immediate: in-flight transactions are gone) every
    # 3-6 s and comes back (crash recovery) after 0.5-2 s
    # Then every process reconnected, and nothing was acknowledged before its commit
    outages: list[Outage] = []
    crash = crash_and_restart(private_pg, "pg_ctl stop -m immediate", (0.5, 2.0), outages=outages)
    under_chaos(tmp_path, pg, private_redis.url, SEED + 3, crash, (3.0, 6.0), outages=outages)


BEHIND_THE_PROXY = {
    # the fault 7: the Celery side (timer tasks out, timer tasks in)
    "worker": ("worker", "dispatcher"),
    "ingest": ("ingest",),
}


@pytest.mark.parametrize(
    "side",
    [
        "worker",
        "ingest",
    ],
)
def test_a_network_cut_between_the_processes_and_the_broker(
    tmp_path: Path, pg: Engine, private_redis: PrivateRedis, proxy: Proxy, side: str
) -> None:
    # Given the worker and dispatcher (or ingest) reaching Redis through a proxy that can cut
    # or stall every connection; the rest and the producer direct
    # When every connection through the proxy is reset or stalled every 2-5 s
    def cut_or_stall(_children: Supervised, _producer: Producer, rng: random.Random) -> None:
        if rng.random() < 0.6:
            proxy.cut(rng.uniform(0.3, 2.0))
            FIGURES.fault("network cut (reset)")
        else:
            proxy.stall(rng.uniform(0.5, 2.0))
            FIGURES.fault("network stall")

    through = dict.fromkeys(BEHIND_THE_PROXY[side], proxy.url)
    under_chaos(
        tmp_path, pg, private_redis.url, SEED + 4, cut_or_stall, (2.0, 5.0), broker_for=through
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
    with supervised(env, tmp_path) as children:
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
    assert not children.unexplained_exits(), children.unexplained_exits()
    check_after_drain(
        pg, producer, policy_file, exact=("violation", "escalation", "retraction"), not_before=back
    )


def wait_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))
