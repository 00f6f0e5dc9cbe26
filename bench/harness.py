"""The bench's own corner of the shared services: a fresh PostgreSQL database, a Redis db of its
own, unique queue names, and the real slatimer processes (`python -m worker <role>`)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis
from sqlalchemy import Engine

from config.settings import DEFAULT_POLICY
from store.sql.engine import make_engine
from store.sql.migrate import upgrade
from tests.runtime import Processes, runtime_env

ADMIN_URL = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_BASE = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
REDIS_DBS = range(1, 14)  # the only Redis dbs this suite may use
ANALYZE_EVERY = float(os.environ.get("BENCH_ANALYZE_EVERY", "15"))
"""Seconds between the ANALYZEs that stand in for autovacuum (0: none), see `autoanalyze`."""
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Stage:
    """One isolated run: database, Redis db, queue names, environment, log directory."""

    name: str
    dsn: str
    url: str
    redis_url: str
    env: dict[str, str]
    logs: Path
    engine: Engine
    extra: dict[str, str] = field(default_factory=dict)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def sql(self, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            cursor = connection.execute(statement, params)
            return cursor.fetchall() if cursor.description else []


def free_redis_db(taken: set[int]) -> int:
    """A Redis db in 1–13 that is empty and not used by this run already."""
    for number in REDIS_DBS:
        if number not in taken and redis.Redis.from_url(f"{REDIS_BASE}/{number}").dbsize() == 0:
            return number
    raise RuntimeError("no empty Redis db among 1–13")


_TAKEN: set[int] = set()


@contextmanager
def stage(label: str, migrate: bool = True, **overrides: str) -> Iterator[Stage]:
    """Create bench_<random> and pick an empty Redis db; drop / FLUSHDB them afterwards."""
    token = f"{label}_{secrets.token_hex(4)}"
    database = f"bench_{token}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    dsn = ADMIN_URL.rsplit("/", 1)[0] + f"/{database}"
    url = dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    number = free_redis_db(_TAKEN)
    _TAKEN.add(number)
    redis_url = f"{REDIS_BASE}/{number}"
    logs = Path(tempfile.mkdtemp(prefix=f"bench-{token}-"))
    engine = make_engine(url)
    env = runtime_env(url, redis_url, **_bench_env(token), **overrides)
    try:
        if migrate:
            upgrade(engine)
        with autoanalyze(dsn, ANALYZE_EVERY):
            yield Stage(token, dsn, url, redis_url, env, logs, engine)
    finally:
        engine.dispose()
        redis.Redis.from_url(redis_url).flushdb()  # our own db only
        _TAKEN.discard(number)
        _drop(database)
        if not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(logs, ignore_errors=True)


@contextmanager
def autoanalyze(dsn: str, every: float) -> Iterator[None]:
    """ANALYZE the run's database every `every` seconds while it runs, as autovacuum's analyze
    does in production. This machine's PostgreSQL runs with `autovacuum = off`: without it a
    table that grows during a run keeps no statistics, and the planner, taking the outcomes
    table for empty, answers a group's merchant windows by scanning every violation (B4 at
    1,000/s: 32 ms per read after 60 s, lateness p99 33-69 s; with statistics 7 ms, p99
    0.5 s; docs/bench.md). Default autovacuum analyzes a table once 10% of it changed, at
    most once a minute per database; every 15 s here is a little kinder than that."""
    if every <= 0:
        yield
        return
    stop = threading.Event()

    def analyze() -> None:
        while not stop.wait(every):
            try:
                with psycopg.connect(dsn, autocommit=True) as connection:
                    connection.execute("ANALYZE")
            except psycopg.Error:  # the database is being dropped, or a run stopped it
                return

    thread = threading.Thread(target=analyze, name="autoanalyze", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def _bench_env(token: str) -> dict[str, str]:
    """Production timer settings (not the tests' compressed ones) and queues of our own."""
    return {
        "SLATIMER_POLICY_FILE": str(DEFAULT_POLICY),
        "SLATIMER_ORDER_QUEUE": f"bench.{token}.orders",
        "SLATIMER_ORDER_EXCHANGE": f"bench.{token}.events",
        "SLATIMER_TIMER_QUEUE": f"bench.{token}.timers",
        "SLATIMER_ALERT_QUEUE": f"bench.{token}.alerts",
        "SLATIMER_TIMER_HORIZON": "300",
        "SLATIMER_DISPATCH_INTERVAL": "1",
        "SLATIMER_TIMER_GROUP_WINDOW": "0.25",
        "SLATIMER_REDISPATCH_GRACE": "300",
        "SLATIMER_INGEST_BATCH_WAIT": "0.2",
        "SLATIMER_INGEST_SET_BASED": os.environ.get("BENCH_INGEST_SET_BASED", "true"),
        "SLATIMER_TIMER_SET_BASED": os.environ.get("BENCH_TIMER_SET_BASED", "true"),
        "SLATIMER_LOG_LEVEL": "INFO",
    }


def _drop(database: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{database}"')


@contextmanager
def processes(env: dict[str, str], logs: Path) -> Iterator[Processes]:
    """The real processes; the worker is stopped with SIGTERM too (its children with it).
    All are signalled first, then awaited: the worker's warm shutdown (~3 s) and the others'
    run at once instead of one after another."""
    children = Processes(env, logs)
    try:
        yield children
    finally:
        stopping = [children.running.pop(name) for name in list(children.running)]
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        for process in stopping:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def python_module(module: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def descendants(pid: int) -> list[int]:
    """The process and all its children (a Celery worker's prefork pool)."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        path = Path(f"/proc/{parent}/task/{parent}/children")
        try:
            kids = [int(x) for x in path.read_text().split()]
        except OSError:
            kids = []
        found += kids
        frontier += kids
    return found


def rss_mb(pid: int) -> float:
    """Resident set size of one process, MiB (0 if gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far."""
    return _cpu(pids, with_children=False)


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its descendants, the exited ones included (a parent's
    cutime/cstime holds the children it has reaped): a Celery worker and its prefork pool."""
    return _cpu(descendants(pid), with_children=True)


def postgres_cpu_seconds() -> float:
    """User + system CPU of the local PostgreSQL server: every `postgres` process, and through
    the postmaster's cutime/cstime the backends that have already exited."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().split(" ", 2)[1] == "(postgres)":
                pids.append(int(stat.parent.name))
        except OSError:
            continue
    return _cpu(pids, with_children=True)


def _cpu(pids: list[int], with_children: bool) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if with_children:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime: reaped children
    return total / CLK_TCK


def machine_cpu_seconds() -> float:
    """CPU time used by the whole machine (all cores, busy jiffies), for CPU per event."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def wait_until(condition: Callable[[], bool], timeout: float, every: float = 0.05) -> float:
    """Seconds until `condition()` held; raises TimeoutError after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"not reached within {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
