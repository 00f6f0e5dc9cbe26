"""Process metrics (Prometheus): what each long-running process counts as it works.

State that lives in the database (deadlines open, outcomes, alerts, DLQ depth) is not counted here:
the read API's /metrics computes it at scrape time (worker/api/store_metrics.py), so it is
right however many replicas run and across restarts. Here are only the things a process sees
happen: events ingested or refused, deadlines fired and how late.

The Celery worker is prefork and a deadline fires inside a child process, so the worker uses
prometheus_client's multiprocess mode: each child writes its samples to files in
PROMETHEUS_MULTIPROC_DIR and the main process serves their sum (`enable_multiprocess` before
the pool forks). Celery signals were the alternative, but `task_success` runs in the child too,
and lateness is known per deadline inside the task, not per task.

Metrics are created on first use, never at import: multiprocess mode must be chosen first.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
    values,
)

from config.settings import Settings

log = structlog.get_logger("slatimer.metrics")

LATENESS_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
"""Seconds from 10 ms (a timer firing on time) to 1 h (a worker outage)."""
MAX_LABEL_CHARS = 48
_LABEL = re.compile(r"^\(?[a-z_]{1,40}\)?$")


@dataclass(frozen=True)
class ProcessMetrics:
    ingested: Counter
    rejected: Counter
    fired: Counter
    lateness: Histogram


@cache
def process_metrics() -> ProcessMetrics:
    return ProcessMetrics(
        ingested=Counter("slatimer_events_ingested", "Events accepted by ingest (repeats too)."),
        rejected=Counter(
            "slatimer_events_rejected",
            "Messages ingest refused and dead-lettered, by the offending field.",
            ["field"],
        ),
        fired=Counter("slatimer_deadlines_fired", "Deadlines fired by the check task.", ["rule"]),
        lateness=Histogram(
            "slatimer_firing_lateness_seconds",
            "Firing time minus due time of each fired deadline.",
            ["rule"],
            buckets=LATENESS_BUCKETS,
        ),
    )


def field_label(field: str) -> str:
    """The top-level field a refusal names. Producers control field names (an unknown one is
    refused by name), so anything that is not a plain identifier becomes 'other': a label's
    values must stay few."""
    head = field.split(".", 1)[0].split("[", 1)[0]
    return head if _LABEL.match(head) else "other"


def batch_ingested(accepted: int, refused_fields: Iterable[str]) -> None:
    """Count a batch: the events accepted, and each refusal by the field it names."""
    metrics = process_metrics()
    metrics.ingested.inc(accepted)
    for field in refused_fields:
        metrics.rejected.labels(field_label(field)).inc()


def deadline_fired(rule: str, lateness_s: float) -> None:
    metrics = process_metrics()
    metrics.fired.labels(rule).inc()
    metrics.lateness.labels(rule).observe(max(lateness_s, 0.0))


def serve(port: int, registry: CollectorRegistry | None = None) -> bool:
    """Serve /metrics on `port` in a daemon thread (0 = off). A port already taken (two
    processes of `slatimer run` given the same one) is logged, not fatal: metrics are optional."""
    if not port:
        return False
    try:
        if registry is None:
            start_http_server(port)
        else:
            start_http_server(port, registry=registry)
    except OSError as error:
        log.error("metrics port unavailable", port=port, error=str(error))
        return False
    log.info("serving metrics", port=port)
    return True


def enable_multiprocess(directory: Path | None) -> CollectorRegistry:
    """Switch this process (and the children it forks) to multiprocess mode, on an empty
    directory (stale files would add a previous run's counts), and return the registry that
    sums every process's samples. Call it before the first metric is created."""
    path = directory or Path(tempfile.mkdtemp(prefix="slatimer-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # only prometheus_client's own files
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # re-chosen
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    return registry


def serve_process_metrics(settings: Settings) -> None:
    """For single-process commands (ingest, dispatcher): the default registry."""
    serve(settings.metrics_port)


def serve_worker_metrics(settings: Settings) -> None:
    """For `slatimer worker`, before Celery forks its pool: the sum over the children."""
    if settings.metrics_port:
        serve(settings.metrics_port, enable_multiprocess(settings.metrics_dir))
