"""Measured comparisons, run side by side in one process: `python -m benchmarks NAME`.

Not run by the test suite. Each benchmark prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, tag: str | None = None, **payload: Any) -> Path:
    """benchmarks/results/NAME.json (NAME-TAG.json with a `--tag`, so runs on another machine or
    with other settings sit beside the default one): the machine (host, CPUs, memory) and the
    payload."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / (f"{name}-{tag}.json" if tag else f"{name}.json")
    out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                               "memory_gib": round(memory_gib, 1), **payload}, indent=2, default=str))
    print(f"written {out}")
    return out


def add_tag_argument(parser: Any) -> None:
    parser.add_argument("--tag", default=None,
                        help="write benchmarks/results/NAME-TAG.json instead of NAME.json (another machine)")


class ReportsToFile:
    """A Ray Train callback (it runs in Train's controller) that appends rank 0's report of every
    epoch to a JSON-lines file, with the wall time it arrived (`_wall`); the result's own metrics
    table keeps only the epochs whose checkpoints were kept. One-node clusters only (a local file)."""

    def __new__(cls, path: str) -> Any:
        import time

        import ray.train

        class _Callback(ray.train.UserCallback):
            def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
                row = {k: v for k, v in metrics[0].items() if isinstance(v, (int, float))}
                with open(path, "a") as f:
                    f.write(json.dumps({**row, "_wall": time.time()}) + "\n")

        return _Callback()
