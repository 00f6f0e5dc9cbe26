"""README.md shows the summary table the demo prints at its end."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.cli.demo import replayed_summary

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "day-of-orders.jsonl"
README = ROOT / "README.md"
START = datetime(2030, 1, 1, tzinfo=UTC)
BLOCK_START, BLOCK_END = "<!-- demo-summary:start -->", "<!-- demo-summary:end -->"


def _readme_block() -> list[str] | None:
    text = README.read_text()
    if BLOCK_START not in text or BLOCK_END not in text:
        return None
    block = text.split(BLOCK_START, 1)[1].split(BLOCK_END, 1)[0]
    return [line.rstrip() for line in block.splitlines() if line.strip() and "```" not in line]


def test_the_readme_shows_the_summary_the_demo_prints() -> None:
    expected = replayed_summary(EXAMPLE, START)
    paste = "\n".join([BLOCK_START, "```", *expected, "```", BLOCK_END])
    found = _readme_block()
    if found is None:
        pytest.fail(f"README.md has no demo summary block; paste this where it belongs:\n{paste}")
    assert found == expected, f"README.md's demo summary is stale; replace its block with:\n{paste}"
