"""B3 (a wave due in the same second) and B4 (a steady rate due per second): deadlines loaded in
bulk (bench/load.py), fired by the real dispatcher + Celery worker; beside them, the naive design
with one Celery ETA task per deadline (bench/baselines/naive.py).

Lateness, slatimer: the worker's `deadline fired` log line (`lateness_s` = the time the check
started minus due_at, worker/timers/firing.py `_fire_one`). Naive: the same, measured at the task's
start. "All recorded" is when the last outcome is visible in PostgreSQL (committed), polled."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg

from bench import harness, load
from bench.b1_ingest import naive_env
from config.policy import load_policy
from config.settings import DEFAULT_POLICY

NAIVE_TAIL = 30.0
"""Seconds after its last due time the naive worker is waited for at most. It falls behind by
more the slower the host (B4: 5 s past the last due one day, 104 s the next), and `make bench`
has 15 minutes; what it has not recorded by then counts as late by at least that long, so its
lateness figures are then lower bounds (the row's note says how many)."""
LATENESS = re.compile(r'"lateness_s": ?(-?[0-9.]+)')


def fire_slatimer(
    count: int, spread: float, lead: float, children: int = 2, workers: int = 1
) -> dict[str, float]:
    """`count` deadlines due over `spread` seconds, fired by `workers` Celery worker processes
    of `children` prefork children each (SLATIMER_WORKER_CONCURRENCY), each with a node name of
    its own, and a dispatcher."""
    template = load.template(load_policy(DEFAULT_POLICY))
    concurrency = {"SLATIMER_WORKER_CONCURRENCY": str(children)}
    with (
        harness.stage("fire", **concurrency) as stage,
        harness.processes(stage.env, stage.logs) as running,
    ):
        pool = [
            running.start("worker", f"worker{index}", f"--hostname=bench{index}@%h")
            for index in range(workers)
        ]
        running.start("dispatcher")
        first_due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
        load.load_orders(
            stage.dsn, template, "w-", count, first_due, timedelta(seconds=spread), "collection"
        )
        cpu_before = _firing_cpu(pool)
        done = _wait_all(stage, "SELECT count(*) FROM outcomes WHERE kind = 'violation'", count,
                         first_due, spread)  # fmt: skip
        cpu = _firing_cpu(pool) - cpu_before
        # prefork children share a log file: lines can interleave, so match, do not parse
        lateness = [
            float(value)
            for log in stage.logs.glob("worker*.log")
            for value in LATENESS.findall(log.read_text(errors="replace"))
        ]
        return {**_summary(done, lateness, count), "cpu_ms": 1000 * cpu / count}


def _firing_cpu(workers: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds so far of the Celery workers (with their children) and PostgreSQL."""
    trees = sum(harness.tree_cpu_seconds(worker.pid) for worker in workers)
    return trees + harness.postgres_cpu_seconds()


def fire_naive(count: int, spread: float, lead: float) -> dict[str, float]:
    with harness.stage("firen", migrate=False) as stage:
        env = naive_env(stage)
        harness.python_module("bench.baselines.naive", env, stage.logs / "s.log", "schema").wait()
        stage.sql(
            "INSERT INTO naive_orders (order_id, created_at) "
            "SELECT 'w-' || g, now() FROM generate_series(1, %s) g",
            (count,),
        )
        worker = _naive_worker(env, stage)
        try:
            first_due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=lead)
            time.sleep(3)  # booted
            rss0 = _tree_rss(worker.pid)
            publish_naive(env, count, first_due, spread)
            time.sleep(max(0.0, (first_due - datetime.now(UTC)).total_seconds() - 1))
            held = stage.redis().hlen("unacked")
            held_bytes = (stage.redis().memory_usage("unacked") or 0) / max(held, 1)
            rss_per = (_tree_rss(worker.pid) - rss0) * 2**20 / max(held, 1)
            done = _wait_all(stage, "SELECT count(*) FROM naive_runs", count, first_due, spread,
                             give_up_after=NAIVE_TAIL)  # fmt: skip
            lateness = [float(row[0]) for row in stage.sql("SELECT lateness_s FROM naive_runs")]
            unrecorded = max(0, count - len(lateness))
            # each still unrecorded is at least as late as the time since the last due
            lateness += [done - spread] * unrecorded
            summary = _summary(done, lateness, count)
            return {**summary, "held": held, "redis_bytes": held_bytes, "rss_bytes": rss_per,
                    "unrecorded": unrecorded}  # fmt: skip
        finally:
            worker.terminate()
            worker.wait()


def _tree_rss(pid: int) -> float:
    return sum(harness.rss_mb(p) for p in harness.descendants(pid))


def _naive_worker(env: dict[str, str], stage: harness.Stage) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "bench.baselines.naive", "worker",
         "--loglevel=WARNING", "--without-gossip", "--without-mingle"],
        env=env, stdout=(stage.logs / "naive-worker.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def publish_naive(env: dict[str, str], count: int, first_due: datetime, spread: float) -> None:
    """apply_async(eta=due) per deadline, the way the naive ingest does, from this process."""
    import os

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from bench.baselines import naive

        celery = naive.make_app()
        task = (
            celery.tasks["naive.check_deadline"] if "naive.check_deadline" in celery.tasks else None
        )
        task = task or celery.task(name="naive.check_deadline")(naive.check_deadline.run)
        with celery.producer_or_acquire() as producer:
            for number in range(1, count + 1):
                due = first_due + timedelta(seconds=spread * (number - 1) / count)
                task.apply_async(args=[f"w-{number}", due.isoformat()], eta=due, producer=producer)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _wait_all(
    stage: harness.Stage,
    sql: str,
    count: int,
    first_due: datetime,
    spread: float,
    give_up_after: float | None = None,
) -> float:
    """Seconds from the first due time until `count` outcomes are committed; with
    `give_up_after`, at most until that many seconds after the last due time (the caller
    counts what was recorded by then).

    The count reads the whole outcomes table, so it is asked every 0.25 s until 95% are in and
    every 0.05 s after that: asked every 0.1 s throughout, it took a tenth of PostgreSQL's
    time in a 100,000 wave, time the workers under test then did not have."""
    timeout = (first_due - datetime.now(UTC)).total_seconds() + spread + 900
    stop = None if give_up_after is None else first_due + timedelta(seconds=spread + give_up_after)
    with psycopg.connect(stage.dsn, autocommit=True) as connection:
        for share, every in ((0.95, 0.25), (1.0, 0.05)):
            harness.wait_until(
                lambda share=share: (
                    connection.execute(sql).fetchone()[0] >= share * count
                    or (stop is not None and datetime.now(UTC) >= stop)
                ),
                timeout,
                every,
            )
    return (datetime.now(UTC) - first_due).total_seconds()


def _summary(done: float, lateness: list[float], count: int) -> dict[str, float]:
    return {
        "done_s": done,
        "p50": harness.percentile(lateness, 0.50),
        "p99": harness.percentile(lateness, 0.99),
        "max": max(lateness, default=float("nan")),
        "fired": len(lateness),
        "count": count,
    }


def visibility_reruns(tasks: int, visibility: float, eta_in: float) -> tuple[int, int]:
    """The naive design past the visibility timeout: ETA tasks unacknowledged for longer than
    it are restored to the queue by Redis and run again. Returns (tasks, runs)."""
    with harness.stage("vis", migrate=False) as stage:
        env = naive_env(stage, BENCH_NAIVE_VISIBILITY=str(visibility))
        harness.python_module("bench.baselines.naive", env, stage.logs / "s.log", "schema").wait()
        stage.sql(
            "INSERT INTO naive_orders (order_id, created_at) "
            "SELECT 'w-' || g, now() FROM generate_series(1, %s) g",
            (tasks,),
        )
        worker = _naive_worker(env, stage)
        try:
            due = datetime.now(UTC) + timedelta(seconds=eta_in)
            publish_naive(env, tasks, due, 0.0)
            time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 5)
            runs = stage.sql("SELECT count(*) FROM naive_runs")[0][0]
            return tasks, int(runs)
        finally:
            worker.terminate()
            worker.wait()
