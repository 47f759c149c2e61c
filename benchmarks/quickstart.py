"""Where the quick start's wall time goes: `recur run configs/quickstart.yaml`, split by phase.

The command runs as its own process, as a user runs it (Python and library imports, a local Ray
started from nothing, a fresh runs folder each time), `--repeat` times. The phases come from the
run's own timings (`timings.json` in the MLflow run: ingest, Ray start, train, evaluate, log,
register, promote); training is split further with the epochs' own seconds (`epoch_seconds`,
the slowest worker's training time, and the epoch wall times between Ray Train reports are not
known here), so `train start-up and per-epoch overhead` is the train phase minus the epochs'
training time: worker start-up, data ingest into the object store, validation, checkpoints and
reports. What is left of the wall time is process start-up, imports and shutting Ray down.

    python -m benchmarks quickstart [--repeat 2] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks import recur_run, write_results

REPO = Path(__file__).resolve().parents[1]
PHASES = ("ingest", "ray_start", "train", "evaluate", "log", "register", "promote")


def one_run(overrides: list[str]) -> dict[str, float]:
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="recur-quickstart-") as tmp:
        runs = f"{tmp}/recur-runs"
        sets = [f"tracking.runs_dir={runs}", f"data.root={runs}/datasets/japanese-vowels", *overrides]
        run = recur_run(REPO / "configs" / "quickstart.yaml", sets, tmp)
        run_id, wall, stdout = run.run_id, run.wall_s, run.stdout
        from pipeline.config import load_config
        from pipeline.tracking.store import resolve_tracking_uri

        cfg = load_config([REPO / "configs" / "quickstart.yaml"], [f"tracking.runs_dir={runs}"])
        client = MlflowClient(resolve_tracking_uri(cfg))
        local = client.download_artifacts(run_id, "timings.json", tmp)
        timings = json.loads(Path(local).read_text())
        epochs = client.get_metric_history(run_id, "epoch_seconds")
        out = {"wall": wall, **{p: float(timings.get(p, 0.0)) for p in PHASES}}
        # ingest and validate are workflow steps: their seconds are on the summary's steps line
        # ("steps  ingest succeeded 1.2s, validate succeeded 0.3s, ...")
        line = next((x for x in stdout.splitlines() if x.strip().startswith("steps ")), "")
        for part in line.strip().removeprefix("steps").split(","):
            words = part.split()
            if len(words) == 3 and words[0] in ("ingest", "validate") and words[2].endswith("s"):
                out["ingest"] += float(words[2][:-1])
        out["epochs"] = len(epochs)
        # the summary as printed: the README's quick-start example is this text (tests/test_readme.py)
        out["summary"] = run.summary
        out["epoch_training"] = sum(m.value for m in epochs)
        out["train_overhead"] = out["train"] - out["epoch_training"]
        out["process_and_shutdown"] = wall - sum(out[p] for p in PHASES)
        return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks quickstart")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    runs = []
    for i in range(args.repeat):
        runs.append(one_run(args.overrides))
        print(f"run {i + 1}: {runs[-1]['wall']:.1f} s wall, {int(runs[-1]['epochs'])} epochs", flush=True)
    rows = [("ray_start", "Ray start (local, from nothing)"), ("ingest", "ingest and validate (import .ts)"),
            ("train_overhead", "train: start-up, ingest to workers, val, checkpoints, reports"),
            ("epoch_training", "train: the epochs' training steps"),
            ("evaluate", "evaluate (test split, plots)"),
            ("log", "log (MLflow model)"), ("register", "register"), ("promote", "promote (gate)"),
            ("process_and_shutdown", "process start, imports, Ray shutdown")]
    wall = statistics.median(r["wall"] for r in runs)
    print(f"\n{'phase':62s} {'median s':>9s} {'share':>6s}")
    table = {}
    for key, label in rows:
        value = statistics.median(r[key] for r in runs)
        table[key] = round(value, 2)
        print(f"{label:62s} {value:9.2f} {value / wall:6.1%}")
    print(f"{'wall':62s} {wall:9.2f}")
    write_results("quickstart", settings=vars(args), runs=runs, median_s=table, median_wall_s=round(wall, 2),
                  summary=runs[0]["summary"])
    return 0
