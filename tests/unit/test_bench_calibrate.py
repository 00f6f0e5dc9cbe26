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
        "import sys; from bench.calibrate import workload; workload(50); "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(ast.literal_eval(out.stdout))
    assert "orjson" in loaded  # the probe saw the workload's own imports
    assert loaded.isdisjoint(SLATIMER_PACKAGES)


def test_the_row_reports_the_speed_before_the_run_and_after_it() -> None:
    row = calibrate.figure(0.29, 0.31)
    assert (row.id, row.value, row.unit, row.target) == ("BC", 0.29, "s", None)
    assert "after the run: 0.310 s" in row.note
