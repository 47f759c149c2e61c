"""ASHA against FIFO on the same search space, seeds and number of trials (JapaneseVowels).

Both studies run in one process on one Ray, one after the other, through `recur tune`'s own code
(`pipeline.workflow.runner.run_study`), with registration off. Reported per scheduler: trial-epochs
used, the best validation loss (the metric both schedulers rank by: validation accuracy on
JapaneseVowels' 54-row validation split saturates at 1.0 and cannot rank trials), the test
accuracy of each study's best trial (the model `recur tune` would register), the study's wall
time, and the scheduling overhead: wall time divided by (sum of trial times / concurrency), 1.0
meaning no time lost between trials.

    python -m benchmarks tune [--samples 12] [--epochs 12] [--grace 1] [--reduction 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks import write_results
from pipeline.config import load_config

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks tune")
    parser.add_argument("--samples", type=int, default=12, help="trials per study")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of a trial that is never stopped")
    parser.add_argument("--grace", type=int, default=1, help="ASHA grace period (epochs)")
    parser.add_argument("--reduction", type=float, default=3, help="ASHA reduction factor")
    args = parser.parse_args(argv)

    from pipeline.workflow.runner import run_study
    from pipeline.workflow.session import connect_ray

    rows = []
    with tempfile.TemporaryDirectory(prefix="recur-bench-tune-") as tmp:
        overrides = [
            f"tracking.runs_dir={tmp}", f"data.root={tmp}/jv", "registry.enabled=false",
            f"train.epochs={args.epochs}", "train.early_stopping_patience=0",
            "tune.metric=val_loss", "tune.mode=min", f"tune.num_samples={args.samples}", "tune.seed=0",
            f"tune.scheduler.grace_period={args.grace}", f"tune.scheduler.reduction_factor={args.reduction}",
            "train.ray_log_level=ERROR",
        ]
        configs = [REPO / "configs" / "quickstart.yaml", REPO / "benchmarks" / "tune-space.yaml"]
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
                "best_val_loss": float(table["best_val_loss"].min()),
                "test_accuracy": summary.test_metrics.get("test_accuracy"),
                "study_wall_s": round(wall, 1),
                "sum_trial_s": round(trial_seconds, 1),
                "overhead": round(wall / (trial_seconds / concurrency), 3) if trial_seconds else None,
            })
    fifo, asha = rows
    ratios = {
        "asha_trial_epochs_over_fifo": round(asha["trial_epochs"] / fifo["trial_epochs"], 3),
        "asha_wall_over_fifo": round(asha["study_wall_s"] / fifo["study_wall_s"], 3),
        "asha_minus_fifo_test_accuracy_points": round(
            100 * (asha["test_accuracy"] - fifo["test_accuracy"]), 2),
    }
    header = ("scheduler", "trials", "trial-epochs", "best val loss", "test acc", "wall s", "overhead")
    print(f"{header[0]:<10}{header[1]:>7}{header[2]:>14}{header[3]:>15}{header[4]:>10}{header[5]:>9}"
          f"{header[6]:>10}")
    for r in rows:
        print(f"{r['scheduler']:<10}{r['trials']:>7}{r['trial_epochs']:>14}{r['best_val_loss']:>15.4f}"
              f"{r['test_accuracy']:>10.4f}{r['study_wall_s']:>9.1f}{r['overhead']:>10.3f}")
    print(f"ASHA used {ratios['asha_trial_epochs_over_fifo']:.0%} of FIFO's trial-epochs and "
          f"{ratios['asha_wall_over_fifo']:.0%} of its wall time; its best trial's test accuracy is "
          f"{ratios['asha_minus_fifo_test_accuracy_points']:+.2f} points from FIFO's")
    write_results("tune", settings=vars(args), rows=rows, ratios=ratios)
    return 0
