"""BC: how fast this machine runs Python at the time of a run, so runs can be compared.

The same commit measured on this 2-core VM has run B5 at 10,455 events/s one day and 4,674 the
next, and the naive baseline's B1 at 804 and 550 events/s: the host's speed moves, and every
figure with it. The side-by-side baseline cancels that for B1-B4 within one run; across runs,
and for B5 (which has no baseline), these rows are the yardstick. They time fixed workloads that
do not depend on slatimer's code (a change to slatimer never moves them), on one core, in a
fresh process, best of a few rounds (the least disturbed):

- `small`: the kinds of work slatimer's hot paths do — JSON decoding and encoding, dict and
  tuple churn, timezone-aware datetime arithmetic, string formatting, hashing — on a working
  set that stays in the CPU's caches;
- `heap`: building and then randomly reading a ~90 MB dict of small objects, larger than this
  machine's 32 MiB L3, as replay's store and a batch's rows are: a neighbour that thrashes
  the shared cache or memory bus slows this one, and not the first.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.report import Figure

SMALL_ITEMS = 20_000
HEAP_ROWS = 300_000
ROOT = Path(__file__).parent.parent
START = datetime(2026, 11, 11, tzinfo=UTC)


def small(items: int = SMALL_ITEMS) -> int:
    """A fixed amount of slatimer-like Python; returns a checksum so nothing is optimised away."""
    import orjson

    checksum = 0
    for i in range(items):
        at = START + timedelta(seconds=i * 37)
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


def heap(rows: int = HEAP_ROWS) -> int:
    """Build a dict of `rows` small rows (~300 B each with their key), then read and update as
    many at random (a fixed seed): memory-bound where `small` is not."""
    rng = random.Random(7)
    table = {f"ord-{i}": [START + timedelta(seconds=i), f"m-{i % 1000}", i] for i in range(rows)}
    checksum = 0
    for _ in range(rows):
        row = table[f"ord-{rng.randrange(rows)}"]
        row[2] += 1
        checksum += row[0].second
    return checksum


WORKLOADS: dict[str, Callable[[], int]] = {"small": small, "heap": heap}


def best_of(rounds: int) -> dict[str, float]:
    """Seconds per workload, the best of `rounds` (run in this process)."""
    found = {}
    for name, workload in WORKLOADS.items():
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            workload()
            times.append(time.perf_counter() - began)
        found[name] = min(times)
    return found


def run(rounds: int) -> dict[str, float]:
    """`best_of(rounds)` in a fresh process (nothing of the bench's own heap in the way)."""
    probe = f"import json, bench.calibrate as c; print(json.dumps(c.best_of({rounds})))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    found: dict[str, float] = json.loads(out.stdout)
    return found


def figures(before: dict[str, float] | None, after: dict[str, float]) -> list[Figure]:
    """The BC rows: each workload's time before the first benchmark and after the last (the
    host's speed can drift within a run as well as between runs); `before` None measures
    once, after (the quick mode)."""
    rows = []
    for name, size in (("small", SMALL_ITEMS), ("heap", HEAP_ROWS)):
        value = before[name] if before else after[name]
        note = f"after the run: {after[name]:.3f} s; " if before else ""
        rows.append(
            Figure(
                "BC",
                f"machine: fixed Python workload, {name} (lower = faster)",
                value,
                "s",
                n=size,
                note=note + "independent of slatimer's code (bench/calibrate.py)",
            )
        )
    return rows
