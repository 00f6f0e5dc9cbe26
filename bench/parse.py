"""`python -m bench.parse FILE [--repeat N]`: the cost of parsing one line into its event,
for the msgspec contract (models/events.py), the pydantic contract it replaced and
`orjson.loads` alone, in one run over the same JSON-lines file:

    python examples/generate.py --orders 5000 > /tmp/ev.jsonl
    python -m bench.parse /tmp/ev.jsonl

The pydantic contract is not kept in the code base: the script imports it from a temporary
copy of models/events.py as it was at PYDANTIC_CONTRACT (the commit before the move, read with
`git show`), so both contracts parse the same lines in the same process. CPU time
(`time.process_time`) per line, the median of `--repeat` passes, and the ratios; the two
contracts are checked to give the same events (their canonical bodies) before timing.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

from models import events

ROOT = Path(__file__).parent.parent
PYDANTIC_CONTRACT = "66b7c069e319a933954a63eb9743513932dd3d7b"
"""The last commit whose models/events.py validated events with pydantic."""


def pydantic_contract() -> ModuleType:
    source = subprocess.run(
        ["git", "show", f"{PYDANTIC_CONTRACT}:models/events.py"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        path = Path(tmp) / "pydantic_events.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("pydantic_events", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # pydantic resolves the annotations through it
        spec.loader.exec_module(module)
    return module


def per_line(parse: Callable[[bytes], Any], lines: list[bytes], repeat: int) -> float:
    """The median over `repeat` passes of the CPU microseconds per line."""
    passes = []
    for _ in range(repeat):
        began = time.process_time()
        for line in lines:
            parse(line)
        passes.append((time.process_time() - began) / len(lines) * 1e6)
    return statistics.median(passes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    lines = [line for line in args.file.read_bytes().splitlines() if line.strip()]
    old = pydantic_contract()
    for line in lines:
        assert events.canonical_body(events.parse_event(line)) == old.canonical_body(
            old.parse_event(line)
        ), line
    timings = {
        "orjson.loads": per_line(orjson.loads, lines, args.repeat),
        "pydantic parse_event": per_line(old.parse_event, lines, args.repeat),
        "msgspec parse_event": per_line(events.parse_event, lines, args.repeat),
    }
    print(f"{len(lines)} lines of {args.file}, median of {args.repeat} passes (CPU time):")
    for name, micros in timings.items():
        print(f"  {name:<22} {micros:6.2f} us per line")
    loads, before, after = timings.values()
    print(f"  pydantic / msgspec     {before / after:6.1f}x")
    print(f"  msgspec / orjson.loads {after / loads:6.1f}x")


if __name__ == "__main__":
    main()
