"""B1: order events published to the order queue, ingested into PostgreSQL with their deadlines,
by the real `slatimer ingest` processes; beside it the naive consumer (bench/baselines/naive.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import kombu

from bench import harness, traffic
from bench.report import Figure
from config.settings import Settings
from worker.ingest.consumer import order_queue, publish_events

AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")

RATIO_TARGET = 10.0
"""Ingest events/s over the naive baseline's, side by side in one run."""
CPU_TARGET = 0.12
"""Consumer CPU-ms per ingested event on Redis."""


NAIVE_BUDGET = 45.0
"""Seconds the naive consumers are timed for at most: their rate is steady (one autocommit
statement and one `apply_async` per event), and at ~500 events/s 50,000 took ~100 s of the
15 minutes `make bench` has, more the slower the host."""


@dataclass(frozen=True)
class Drained:
    seconds: float
    handled: int
    """Messages committed when the clock stopped: all of them, unless a budget ran out."""
    cpu: float
    """CPU seconds of the consumer processes."""
    machine: float
    """CPU seconds of the whole machine (PostgreSQL and the broker included)."""

    @property
    def rate(self) -> float:
        return self.handled / self.seconds

    @property
    def cpu_ms(self) -> float:
        """CPU-ms per message handled, in the consumers."""
        return 1000 * self.cpu / self.handled

    @property
    def machine_ms(self) -> float:
        """CPU-ms per message handled, for the whole machine."""
        return 1000 * self.machine / self.handled


def _drain(
    stage: harness.Stage,
    start: list,
    done_sql: str,
    count: int,
    queued: Callable[[], int] | None = None,
    budget: float | None = None,
) -> Drained:
    """Start the consumers, time from the first message taken to the last one committed, or
    until `budget` seconds have passed. `queued`: messages still in the queue (default: the
    Redis list's length)."""
    client = stage.redis()
    queue = stage.env["SLATIMER_ORDER_QUEUE"]
    queued = queued or (lambda: int(client.llen(queue)))
    pids = [process.pid for process in start]
    harness.wait_until(lambda: queued() < count, 60, every=0.01)
    began, cpu0, machine0 = (
        time.monotonic(),
        harness.cpu_seconds(pids),
        harness.machine_cpu_seconds(),
    )
    handled = 0

    def finished() -> bool:
        nonlocal handled
        handled = int(stage.sql(done_sql)[0][0])
        return handled >= count or (budget is not None and time.monotonic() - began >= budget)

    harness.wait_until(finished, 900, every=0.25)
    cpu, machine = harness.cpu_seconds(pids) - cpu0, harness.machine_cpu_seconds() - machine0
    return Drained(time.monotonic() - began, handled, cpu, machine)


def _settings(stage: harness.Stage) -> Settings:
    return Settings(**{k[9:].lower(): v for k, v in stage.env.items() if k.startswith("SLATIMER_")})


def _queue(stage: harness.Stage, count: int, label: str = "") -> None:
    settings = _settings(stage)
    bodies = traffic.order_events(count, f"o{label}{stage.name[-4:]}-", datetime.now(UTC))
    publish_events(stage.redis_url, bodies[:1], settings)
    traffic.push(
        stage.redis(), settings.order_queue, settings.order_exchange,
        settings.order_routing_key, bodies[1:],
    )  # fmt: skip


def slatimer(count: int, replicas: int) -> Drained:
    with harness.stage("b1") as stage:
        _queue(stage, count)
        with harness.processes(stage.env, stage.logs) as children:
            started = [children.start("ingest", f"ingest{i}") for i in range(replicas)]
            return _drain(
                stage,
                started,
                "SELECT (SELECT count(*) FROM inbox) + (SELECT count(*) FROM dead_letters)",
                count,
            )


def slatimer_amqp(count: int, replicas: int) -> Drained:
    """The same on RabbitMQ: deliveries stream under the prefetch window and acks are not
    waited for, where kombu's Redis transport makes ~2 round trips per message received."""
    with harness.stage("b1a", SLATIMER_BROKER_URL=AMQP_URL) as stage:
        settings = _settings(stage)
        bodies = traffic.order_events(count, f"oa{stage.name[-4:]}-", datetime.now(UTC))
        with kombu.Connection(AMQP_URL) as connection:  # no publisher confirms: not timed
            publish_events(connection, bodies, settings)
            queue = order_queue(settings)(connection.default_channel)
            try:
                with harness.processes(stage.env, stage.logs) as children:
                    started = [children.start("ingest", f"ingest{i}") for i in range(replicas)]
                    done = (
                        "SELECT (SELECT count(*) FROM inbox) + (SELECT count(*) FROM dead_letters)"
                    )

                    def waiting() -> int:
                        return int(queue.queue_declare(passive=True).message_count)

                    return _drain(stage, started, done, count, waiting)
            finally:
                queue.delete()
                queue.exchange.delete()


def naive(count: int, replicas: int) -> Drained:
    with harness.stage("b1n", migrate=False) as stage:
        env = naive_env(stage)
        harness.python_module(
            "bench.baselines.naive", env, stage.logs / "schema.log", "schema"
        ).wait()
        _queue(stage, count)
        started = [
            harness.python_module("bench.baselines.naive", env, stage.logs / f"n{i}.log", "ingest")
            for i in range(replicas)
        ]
        try:
            done = "SELECT count(*) FROM naive_events"
            return _drain(stage, started, done, count, budget=NAIVE_BUDGET)
        finally:
            for process in started:
                process.terminate()
                process.wait()


def naive_env(stage: harness.Stage, **extra: str) -> dict[str, str]:
    return {
        **stage.env,
        "BENCH_NAIVE_DSN": stage.dsn,
        "BENCH_NAIVE_BROKER": stage.redis_url,
        "BENCH_NAIVE_QUEUE": f"bench.{stage.name}.naive",
        "BENCH_NAIVE_ORDERS": stage.env["SLATIMER_ORDER_QUEUE"],
        **extra,
    }


def run(count: int) -> list[Figure]:
    replicas = int(os.environ.get("BENCH_INGEST_REPLICAS", "2"))
    ours, amqp, base = (measure(count, replicas) for measure in (slatimer, slatimer_amqp, naive))
    rate, a_rate, n_rate = ours.rate, amqp.rate, base.rate
    timed = "" if base.handled >= count else f"; baseline timed on its first {base.handled:,}"
    return [
        Figure("B1", f"ingest events/s ({replicas} consumers)", rate, "events/s", n_rate,
               None, None, count, timed.removeprefix("; ")),
        Figure("B1", f"ingest events/s on RabbitMQ ({replicas} consumers)", a_rate, "events/s",
               n_rate, None, None, count,
               f"{amqp.cpu_ms:.3f} CPU-ms/event in the consumers, "
               f"{amqp.machine_ms:.3f} whole machine; baseline: the naive one on "
               f"Redis{timed}"),
        Figure("B1", "ingest events/s / baseline's (Redis)", rate / n_rate, "x", 1.0,
               f">= {RATIO_TARGET:g}x", rate / n_rate >= RATIO_TARGET, count),
        Figure("B1", "CPU-ms per event, ingest processes (Redis)", ours.cpu_ms, "ms",
               base.cpu_ms, f"<= {CPU_TARGET:g}", ours.cpu_ms <= CPU_TARGET, count),
        Figure("B1", "CPU-ms per event, whole machine (incl. PG)", ours.machine_ms, "ms",
               base.machine_ms, None, None, count,
               "shared machine: other runs add noise"),
    ]  # fmt: skip
