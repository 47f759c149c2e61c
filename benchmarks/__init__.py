"""Measured comparisons, run side by side in one process: `python -m benchmarks NAME`.

Not run by the test suite. Each benchmark prints a table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RecurRun:
    """One `recur run` as a user runs it: its wall time, printed output and MLflow run id."""

    wall_s: float
    stdout: str
    run_id: str

    @property
    def summary(self) -> str:
        """The summary as printed (from `recur run finished` on)."""
        return self.stdout[self.stdout.rindex("recur run finished"):].rstrip()


def recur_run(config: str | Path, sets: list[str], cwd: str) -> RecurRun:
    """`recur run CONFIG --set ...` in its own process from `cwd`, timed; exits with its output
    when it fails."""
    command = [str(Path(sys.executable).parent / "recur"), "run", str(config)]
    for item in sets:
        command += ["--set", item]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"recur run failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    run_id = next(line.split()[-1] for line in done.stdout.splitlines()
                  if line.strip().startswith("MLflow run"))
    return RecurRun(wall_s=wall, stdout=done.stdout, run_id=run_id)


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
