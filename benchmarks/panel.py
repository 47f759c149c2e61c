"""What the panel benchmarks (`ucr`, `forecast-panel`) share: `recur` run as its own process,
exactly as a user types it, and the finished run read back from MLflow.

Each dataset gets a fresh runs folder (`tracking.runs_dir`), so its registry starts empty and the
gate's decision is `champion` (beat the trivial baseline) or `rejected` (did not), never a
comparison with an earlier benchmark run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TAIL_CHARS = 3000  # of a failed command's stdout and stderr kept in its error


class CommandFailed(RuntimeError):
    """A `recur` command exited non-zero; the message holds the command and its output's tail."""

    def __init__(self, command: list[str], finished: Finished) -> None:
        self.stdout, self.stderr = finished.stdout, finished.stderr
        super().__init__(f"`{' '.join(command)}` failed (exit {finished.returncode}):\n"
                         f"{finished.stdout[-TAIL_CHARS:]}\n{finished.stderr[-TAIL_CHARS:]}")


@dataclass(frozen=True)
class Finished:
    """A command that ran: its exit status, output, wall seconds from start to exit, and the peak
    memory of its process tree in MiB (`tree_memory_mib`, sampled; None where /proc is absent)."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_mib: float | None = None


MEMORY_SAMPLE_S = 0.2  # between two samples of a command's process tree memory


def tree_memory_mib(root: int) -> float | None:
    """Memory of process `root` and all its descendants now, in MiB: the sum of their PSS
    (proportional set size: a page shared by k processes counts 1/k in each, so Ray's workers,
    which share libraries and the object store, are not counted twice), or of their RSS where the
    kernel gives no PSS. None without Linux's /proc."""
    proc = Path("/proc")
    if not (proc / str(root)).exists():
        return None
    children: dict[int, list[int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while the tree was read
        children.setdefault(ppid, []).append(int(stat.parent.name))
    total_kib, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        for name, field in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
            try:
                lines = (proc / str(pid) / name).read_text().splitlines()
            except OSError:
                continue
            kib = [int(line.split()[1]) for line in lines if line.startswith(field)]
            if kib:
                total_kib += kib[0]
                break
    return total_kib / 1024


def run_measured(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> Finished:
    """Run `command` in `cwd` (with `env`, default this process's), sampling its process tree's
    memory every MEMORY_SAMPLE_S seconds while it runs: the peak goes into `Finished.peak_mib`.
    Output is captured through files, so a chatty command cannot fill a pipe and stall."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        peak: float | None = None
        while process.poll() is None:
            now = tree_memory_mib(process.pid)
            if now is not None:
                peak = now if peak is None else max(peak, now)
            time.sleep(MEMORY_SAMPLE_S)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return Finished(process.returncode, out.read(), err.read(), seconds,
                        round(peak, 1) if peak is not None else None)


RAY_START_TRIES = 3  # a command whose local Ray missed Ray's fixed 30 s start-up wait runs again
RAY_NOT_STARTED = "could not start a local Ray"  # recur's message for it


def recur(args: list[str], *, cwd: Path, check: bool = True) -> Finished:
    """Run `recur ARGS` (the console script of this interpreter's environment) in `cwd`; again,
    up to RAY_START_TRIES times, when a machine busy with other work kept its local Ray from
    starting (the figures are those of the attempt that ran)."""
    command = [str(Path(sys.executable).parent / "recur"), *args]
    for attempt in range(1, RAY_START_TRIES + 1):
        finished = run_measured(command, cwd=cwd)
        if finished.returncode == 0 or RAY_NOT_STARTED not in finished.stderr or attempt == RAY_START_TRIES:
            break
        print(f"`recur {' '.join(args[:2])} ...`: {RAY_NOT_STARTED} on a busy machine; again "
              f"({attempt + 1} of {RAY_START_TRIES})", flush=True)
    if check and finished.returncode != 0:
        raise CommandFailed(command, finished)
    return finished


def train(configs: list[Path], overrides: list[str], *, cwd: Path) -> tuple[str, Finished]:
    """`recur -q run CONFIG... --set ...`; returns the MLflow run id (from its summary) and the run."""
    args = ["-q", "run", *map(str, configs)]
    for item in overrides:
        args += ["--set", item]
    finished = recur(args, cwd=cwd)
    run_id = next((line.split()[-1] for line in finished.stdout.splitlines()
                   if line.strip().startswith("MLflow run")), None)
    if run_id is None:
        raise RuntimeError(f"`recur run` printed no 'MLflow run <id>' line:\n{finished.stdout[-TAIL_CHARS:]}")
    return run_id, finished


def read_run(configs: list[Path], overrides: list[str], run_id: str) -> dict[str, Any]:
    """A finished run as the benchmarks report it: its latest metric values (`metrics`), the
    resolved budget (`budget`: the `budget.*` params without the prefix), the split row counts
    (`rows`: `data.rows.*`), the train step's seconds (`train_s`; every step's in `steps_s`), and
    the gate's decision (`registry/decision.json`, None when the run registered nothing)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.config import load_config
    from pipeline.tracking.store import resolve_tracking_uri

    # the same files and overrides as the run, so the tracking URI resolves as it did there
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one small JSON: no bar in the output
    client = MlflowClient(resolve_tracking_uri(load_config(configs, overrides)))
    run = client.get_run(run_id)
    params = run.data.params
    with tempfile.TemporaryDirectory(prefix="recur-bench-") as tmp:
        try:
            decision = json.loads(Path(client.download_artifacts(run_id, "registry/decision.json", tmp))
                                  .read_text())
        except (MlflowException, OSError):
            decision = None
    train_s = run.data.tags.get("recur.step.train.seconds")
    steps_s = {k.removeprefix("recur.step.").removesuffix(".seconds"): float(v)
               for k, v in run.data.tags.items() if k.startswith("recur.step.") and k.endswith(".seconds")}
    return {
        "metrics": dict(run.data.metrics),
        "budget": {k.removeprefix("budget."): v for k, v in params.items() if k.startswith("budget.")},
        "rows": {k.removeprefix("data.rows."): int(v) for k, v in params.items()
                 if k.startswith("data.rows.")},
        "train_s": float(train_s) if train_s else None,
        "steps_s": steps_s,
        "decision": decision,
    }


def versions(*packages: str) -> dict[str, Any]:
    """Python, the listed packages' installed versions (None when absent) and the git commit of
    the checkout (with `dirty` when it holds uncommitted changes): what a result was measured with."""
    out: dict[str, Any] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        out["git"] = commit + (" dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["git"] = None
    return out


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: a float with `digits` decimals, None as a dash, anything else as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table of `rows` (cells through `fmt`, so floats get 3 decimals unless
    already formatted as text)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_each(items: list[Any], run_one: Any, work_dir: Path | None, prefix: str) -> list[dict[str, Any]]:
    """`run_one(item, work)` for every item, one at a time, in `work_dir` (kept) or a temporary
    folder named `prefix...` (removed afterwards, whatever happened)."""
    work = work_dir.resolve() if work_dir else Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return [run_one(item, work) for item in items]
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

