"""B5: `slatimer replay` of a generated event log (examples/generate.py), timed as a process,
in one process and with `--jobs 2`, beside `orjson.loads` of the same lines (the floor any
replay has to stand on: reading the JSON)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench import harness

ROOT = Path(__file__).parent.parent
EVENTS_PER_ORDER = 7  # examples/generate.py's current mix; n reports the real count


@dataclass(frozen=True)
class Replayed:
    lines: int
    seconds: float
    cpu: float
    """User + system CPU of the replay and its worker processes."""

    @property
    def rate(self) -> float:
        return self.lines / self.seconds


@contextmanager
def generated(events: int) -> Iterator[Path]:
    """A generated log of about `events` events, removed afterwards."""
    orders = max(1, int(events / EVENTS_PER_ORDER))
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        log = Path(tmp) / "events.jsonl"
        with log.open("wb") as out:
            subprocess.run(
                [sys.executable, str(ROOT / "examples" / "generate.py"), "--orders", str(orders)],
                stdout=out, check=True,
            )  # fmt: skip
        yield log


def replay(log: Path, jobs: int) -> Replayed:
    """`slatimer replay LOG --summary --jobs N`, wall time and CPU of its process tree."""
    lines = sum(1 for line in log.open("rb") if line.strip())
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "replay", str(log), "--summary", "--jobs", str(jobs)],
        stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    cpu = 0.0
    while process.poll() is None:
        cpu = max(cpu, harness.tree_cpu_seconds(process.pid))
        time.sleep(0.1)
    seconds = time.monotonic() - began
    if process.returncode not in (0, 1):
        raise RuntimeError(f"slatimer replay failed with status {process.returncode}")
    return Replayed(lines, seconds, cpu)


def decode_rate(log: Path, rounds: int = 3) -> float:
    """Lines per second `orjson.loads` decodes of the same file (the best of a few rounds)."""
    lines = [line for line in log.read_bytes().splitlines() if line.strip()]
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        for line in lines:
            orjson.loads(line)
        best = min(best, time.process_time() - began)
    return len(lines) / best
