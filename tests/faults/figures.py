"""The suite's figures: one session-wide tally, printed as a table at the end of the run
(tests/faults/conftest.py) and written to tests/faults/results.json."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results.json"

ROWS = [
    ("events_published", "events published (confirmed)"),
    ("events_lost", "events lost (must be 0)"),
    ("duplicate_outcomes", "duplicate outcomes/ledger/alerts/inbox rows (must be 0)"),
    ("outcomes_checked", "outcomes compared with `slatimer replay`"),
    ("withdrawn_on_late_arrival", "breaches raised, then withdrawn on evidence received late"),
    ("late_deadlines", "deadlines fired late beyond the tolerance"),
    ("max_lateness_s", "worst lateness of a fired deadline (s)"),
    ("max_ingest_delay_s", "worst delay from an event to its receipt in the inbox (s)"),
    ("alerts_delivered", "alerts delivered (every one at least once)"),
    ("bad_messages_tried", "bad messages tried"),
    ("bad_messages_dead_lettered", "bad messages dead-lettered"),
    ("exits_on_bad_input", "process exits caused by bad input (must be 0)"),
    ("supervised_restarts", "worker exits on a Redis loss (kombu bug), restarted by supervisor"),
    ("model_steps", "state-machine steps (SQLite store vs oracle)"),
    ("planted_faults_caught", "faults planted in a replayed record that the oracle caught"),
]


class Figures:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.maxima: dict[str, float] = {}
        self.tests: list[str] = []

    def add(self, name: str, amount: int = 1) -> None:
        self.counts[name] += amount

    def fault(self, kind: str, amount: int = 1) -> None:
        self.faults[kind] += amount

    def peak(self, name: str, value: float) -> None:
        self.maxima[name] = round(max(self.maxima.get(name, 0.0), value), 2)

    @contextmanager
    def untallied(self) -> Iterator[None]:
        """Whatever is counted inside the block is forgotten after it."""
        counts, maxima = self.counts.copy(), dict(self.maxima)
        try:
            yield
        finally:
            self.counts, self.maxima = counts, maxima

    def as_dict(self) -> dict[str, Any]:
        return {
            **{key: self.counts.get(key, 0) for key, _ in ROWS if key not in self.maxima},
            **self.maxima,
            "faults_injected": dict(sorted(self.faults.items())),
            "tests": self.tests,
        }

    def table(self) -> list[str]:
        data = self.as_dict()
        lines = [f"{'figure':58} value", f"{'-' * 58} -----"]
        lines += [f"{label:58} {data.get(key, 0)}" for key, label in ROWS]
        lines += [
            f"{'fault injected: ' + kind:58} {n}" for kind, n in data["faults_injected"].items()
        ]
        return lines

    def write(self) -> None:
        RESULTS.write_text(json.dumps(self.as_dict(), indent=2) + "\n")


FIGURES = Figures()
