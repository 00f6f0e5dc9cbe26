"""B5: `slatimer replay --jobs 1` of a generated event log (examples/generate.py), timed as a
process (one process, so its CPU time is the replay's and the history stays comparable)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import harness

ROOT = Path(__file__).parent.parent
EVENTS_PER_ORDER = 7  # examples/generate.py's current mix; n reports the real count


def run(events: int) -> tuple[int, float, float]:
    """(events replayed, seconds, CPU seconds) for about `events` events."""
    orders = max(1, int(events / EVENTS_PER_ORDER))
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        log = Path(tmp) / "events.jsonl"
        with log.open("wb") as out:
            subprocess.run(
                [sys.executable, str(ROOT / "examples" / "generate.py"), "--orders", str(orders)],
                stdout=out, check=True,
            )  # fmt: skip
        lines = sum(1 for line in log.open("rb") if line.strip())
        began = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "replay", str(log), "--summary", "--jobs", "1"],
            stdout=subprocess.DEVNULL, cwd=ROOT,
        )  # fmt: skip
        cpu = 0.0
        while process.poll() is None:
            cpu = max(cpu, harness.cpu_seconds([process.pid]))
            time.sleep(0.2)
        seconds = time.monotonic() - began
        if process.returncode not in (0, 1):
            raise RuntimeError(f"slatimer replay failed with status {process.returncode}")
        return lines, seconds, cpu
