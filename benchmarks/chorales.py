"""Music generation on the Bach chorales: held-out perplexity of recur's LSTM beside an add-one
unigram and bigram of the same tokens.

`recur run configs/lm-chorales.yaml` runs as its own process, as a user runs it (a fresh runs
folder, a local Ray started from nothing, the chorales read from the corpus inside music21). The
three perplexities are the run's own metrics, on the same held-out chorales and the same tokens
(the test split's streams, every token after a stream's first): `test_perplexity` (the model),
`test_unigram_perplexity` and `test_bigram_perplexity` (pipeline.tasks.ngram, fit on train).
The generated samples' MIDI files are checked to parse back with music21.

    python -m benchmarks chorales [--set KEY=VALUE ...] [--tag TAG]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks import add_tag_argument, recur_run, write_results

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "lm-chorales.yaml"
METRICS = ("test_perplexity", "test_unigram_perplexity", "test_bigram_perplexity", "test_loss",
           "test_baseline_perplexity", "test_baseline_bigram_perplexity")


def run_config(overrides: list[str], tmp: str) -> dict:
    from mlflow import MlflowClient
    from music21 import converter

    from pipeline.config import load_config
    from pipeline.tracking.store import resolve_tracking_uri

    runs = f"{tmp}/recur-runs"
    sets = [f"tracking.runs_dir={runs}", f"data.root={runs}/datasets/bach-chorales", *overrides]
    done = recur_run(CONFIG, sets, tmp)
    run_id = done.run_id
    client = MlflowClient(resolve_tracking_uri(load_config([CONFIG], sets)))
    run = client.get_run(run_id)
    midi = client.download_artifacts(run_id, "eval/sample_1.mid", tmp)
    notes = len(converter.parse(midi).flatten().notes)
    return {
        "wall_s": round(done.wall_s, 1),
        "metrics": {k: run.data.metrics[k] for k in METRICS if k in run.data.metrics},
        "epochs": len(client.get_metric_history(run_id, "val_loss")),
        "sample_1_mid_notes_parsed_back": notes,
        "artifacts": sorted(a.path for folder in ("eval", "plots")
                            for a in client.list_artifacts(run_id, folder)),
        "summary": done.summary,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks chorales")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    add_tag_argument(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recur-chorales-") as tmp:
        result = run_config(args.overrides, tmp)
    m = result["metrics"]
    rows = [("recur LSTM (configs/lm-chorales.yaml)", m["test_perplexity"]),
            ("bigram, add-one", m["test_bigram_perplexity"]),
            ("unigram, add-one", m["test_unigram_perplexity"])]
    print(f"\n{'held-out chorales, same tokens':40s} {'perplexity':>10s}")
    for label, value in rows:
        print(f"{label:40s} {value:10.3f}")
    print(f"wall {result['wall_s']} s, {result['epochs']} epochs; sample_1.mid parsed back with "
          f"{result['sample_1_mid_notes_parsed_back']} notes")
    write_results("chorales", tag=args.tag,
                  settings={"config": "configs/lm-chorales.yaml", "set": args.overrides},
                  perplexity={"recur": m["test_perplexity"], "bigram": m["test_bigram_perplexity"],
                              "unigram": m["test_unigram_perplexity"]}, **result)
    return 0
