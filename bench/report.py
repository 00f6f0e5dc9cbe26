"""Figures: one row per measured metric, printed as a table and written to bench/results.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results.json"


@dataclass
class Figure:
    id: str
    metric: str
    value: float | None
    unit: str
    baseline: float | None = None
    target: str | None = None
    met: bool | None = None
    n: int | None = None
    note: str = ""


def _num(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(figures: list[Figure]) -> str:
    header = f"{'id':<4} {'metric':<44} {'value':>12} {'baseline':>12} {'unit':<14} "
    header += f"{'target':<14} {'met':<5} {'n':>10}"
    lines = [header, "-" * len(header)]
    for f in figures:
        met = "—" if f.met is None else ("yes" if f.met else "NO")
        n = f"{f.n:,}" if f.n is not None else "—"
        lines.append(
            f"{f.id:<4} {f.metric[:44]:<44} {_num(f.value):>12} {_num(f.baseline):>12} "
            f"{f.unit[:14]:<14} {(f.target or '—')[:14]:<14} {met:<5} {n:>10}"
        )
    return "\n".join(lines)


def write(figures: list[Figure], path: Path = RESULTS) -> None:
    rows = []
    for figure in figures:
        row = asdict(figure)
        # the schema says true|false: a row without a target (informational) is not a miss
        row["met"] = True if figure.target is None else bool(figure.met)
        rows.append(row)
    path.write_text(json.dumps(rows, indent=2) + "\n")
