"""BC: how fast this machine runs Python today, so runs on different days can be compared.

The same commit measured on this 2-core VM has run B5 at 10,455 events/s one day and 5,145 the
next, and the naive baseline's B1 at 804 and 523 events/s: the host's speed moves, and every
figure with it. The side-by-side baseline cancels that for B1-B4 within one run; across runs,
and for B5 (which has no baseline), this row is the yardstick. It times a fixed workload that
does not depend on slatimer's code (so a change to slatimer never moves it): the kinds of work
slatimer's hot paths do in Python — JSON decoding and encoding, dict and tuple churn, small
objects, timezone-aware datetime arithmetic, string formatting, hashing — on one core, in a
fresh process, best of a few rounds (the least disturbed).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.report import Figure

ROUNDS = 3
ITEMS = 20_000
ROOT = Path(__file__).parent.parent


def workload(items: int = ITEMS) -> int:
    """A fixed amount of slatimer-like Python; returns a checksum so nothing is optimised away."""
    import orjson

    start = datetime(2026, 11, 11, tzinfo=UTC)
    checksum = 0
    for i in range(items):
        at = start + timedelta(seconds=i * 37)
        document = {
            "event_id": f"evt-{i:06d}",
            "type": "order.created",
            "occurred_at": at.isoformat(),
            "order_id": f"ord-{i % 997}",
            "items": [{"sku": f"sku-{i % 71:03d}", "quantity": 1 + i % 3}],
        }
        decoded = orjson.loads(orjson.dumps(document, option=orjson.OPT_SORT_KEYS))
        due = datetime.fromisoformat(decoded["occurred_at"]) + timedelta(hours=120)
        slots = sorted((rule, due - timedelta(hours=h)) for h, rule in ((24, "a"), (1, "b")))
        digest = hashlib.sha256(repr(slots).encode()).hexdigest()
        checksum += len(digest) + due.hour + len(decoded["items"])
    return checksum


def _timed_rounds() -> float:
    import time

    best = float("inf")
    for _ in range(ROUNDS):
        began = time.perf_counter()
        workload()
        best = min(best, time.perf_counter() - began)
    return best


def run() -> float:
    """Seconds for one round of the fixed workload (best of ROUNDS), in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", "from bench.calibrate import _timed_rounds; print(_timed_rounds())"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return float(out.stdout.strip())


def figure(before: float, after: float) -> Figure:
    """The BC row: the workload's time before the first workload and after the last (the
    host's speed can drift within a run as well as between runs)."""
    return Figure(
        "BC",
        "machine: fixed Python workload (lower = faster)",
        before,
        "s",
        n=ITEMS,
        note=f"after the run: {after:.3f} s; independent of slatimer's code (bench/calibrate.py)",
    )
