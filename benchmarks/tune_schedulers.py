"""ASHA against FIFO on the same search space, seeds and number of trials (JapaneseVowels).

Both studies run in one process on one Ray, one after the other, through `recur tune`'s own code
(`pipeline.workflow.tune.run_study`), with registration off. Reported per scheduler: trial-epochs
used, the best validation accuracy, the study's wall time, and the scheduling overhead: wall time
divided by (sum of trial times / concurrency), 1.0 meaning no time lost between trials.

    python -m benchmarks tune [--samples 8] [--epochs 16] [--grace 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tune")
    parser.add_argument("--samples", type=int, default=8, help="trials per study")
    parser.add_argument("--epochs", type=int, default=16, help="epochs of a trial that is never stopped")
    parser.add_argument("--grace", type=int, default=2, help="ASHA grace period (epochs)")
    args = parser.parse_args(argv)

    from pipeline.workflow.session import connect_ray
    from pipeline.workflow.tune import run_study

    rows = []
    with tempfile.TemporaryDirectory(prefix="recur-bench-tune-") as tmp:
        overrides = [
            f"tracking.runs_dir={tmp}", f"data.root={tmp}/jv", "registry.enabled=false",
            f"train.epochs={args.epochs}", "train.early_stopping_patience=0",
            "tune.metric=val_accuracy", f"tune.num_samples={args.samples}", "tune.seed=0",
            f"tune.scheduler.grace_period={args.grace}", "tune.scheduler.reduction_factor=2",
            "train.ray_log_level=ERROR",
        ]
        configs = [REPO / "configs" / "quickstart.yaml", REPO / "configs" / "tune-quickstart.yaml"]
        connected = False
        for scheduler in ("fifo", "asha"):
            cfg = load_config(configs, [*overrides, f"tune.scheduler.name={scheduler}",
                                        f"tune.name=bench-{scheduler}"])
            connect = None if connected else (lambda cfg=cfg: connect_ray(cfg, None))
            start = time.perf_counter()
            summary = run_study(cfg, connect=connect)
            connected = True
            table = summary.trials
            trial_seconds = float(table["seconds"].sum())
            concurrency = summary.concurrency
            wall = summary.timings.get("tune", time.perf_counter() - start)
            rows.append({
                "scheduler": scheduler,
                "trials": len(table),
                "concurrency": concurrency,
                "trial_epochs": int(table["epochs"].sum()),
                "best_val_accuracy": float(table["best_val_accuracy"].max()),
                "test_accuracy": summary.test_metrics.get("test_accuracy"),
                "study_wall_s": round(wall, 1),
                "sum_trial_s": round(trial_seconds, 1),
                "overhead": round(wall / (trial_seconds / concurrency), 3) if trial_seconds else None,
            })
    fifo, asha = rows
    ratios = {
        "asha_trial_epochs_over_fifo": round(asha["trial_epochs"] / fifo["trial_epochs"], 3),
        "asha_minus_fifo_best_val_accuracy_points": round(
            100 * (asha["best_val_accuracy"] - fifo["best_val_accuracy"]), 2),
    }
    header = ("scheduler", "trials", "trial-epochs", "best val acc", "wall s", "overhead")
    print(f"{header[0]:<10}{header[1]:>7}{header[2]:>14}{header[3]:>14}{header[4]:>9}{header[5]:>10}")
    for r in rows:
        print(f"{r['scheduler']:<10}{r['trials']:>7}{r['trial_epochs']:>14}{r['best_val_accuracy']:>14.4f}"
              f"{r['study_wall_s']:>9.1f}{r['overhead']:>10.3f}")
    print(f"ASHA used {ratios['asha_trial_epochs_over_fifo']:.0%} of FIFO's trial-epochs; best val accuracy "
          f"{ratios['asha_minus_fifo_best_val_accuracy_points']:+.2f} points")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "tune.json"
    out.write_text(json.dumps({"machine": platform.node(), "cpus": __import__("os").cpu_count(),
                               "settings": vars(args), "rows": rows, "ratios": ratios}, indent=2))
    print(f"written {out}")
    return 0
