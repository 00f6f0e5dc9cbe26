"""The BC row (bench/calibrate.py) is a yardstick for the machine, so it must not move when
slatimer's code does: its workload may not import any of it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from bench import calibrate

ROOT = Path(__file__).parent.parent.parent
SLATIMER_PACKAGES = ("models", "store", "worker", "tasks", "config")


def test_the_machine_workload_runs_none_of_slatimers_code() -> None:
    probe = (
        "import sys; from bench.calibrate import heap, small; small(50); heap(50); "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(ast.literal_eval(out.stdout))
    assert "orjson" in loaded  # the probe saw the workload's own imports
    assert loaded.isdisjoint(SLATIMER_PACKAGES)


def test_the_rows_report_each_workload_before_the_run_and_after_it() -> None:
    small, heap = calibrate.figures({"small": 0.29, "heap": 1.4}, {"small": 0.31, "heap": 1.5})
    assert (small.id, small.value, small.unit, small.target) == ("BC", 0.29, "s", None)
    assert "after the run: 0.310 s" in small.note
    assert (heap.value, heap.n) == (1.4, calibrate.HEAP_ROWS)
    assert "after the run: 1.500 s" in heap.note


def test_the_quick_mode_measures_once_after_the_run() -> None:
    small, heap = calibrate.figures(None, {"small": 0.31, "heap": 1.5})
    assert (small.value, heap.value) == (0.31, 1.5)
    assert "after the run" not in small.note
