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


def write_results(name: str, **payload: Any) -> Path:
    """benchmarks/results/NAME.json: the machine (host, CPUs, memory) and the payload."""
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                               "memory_gib": round(memory_gib, 1), **payload}, indent=2, default=str))
    print(f"written {out}")
    return out
