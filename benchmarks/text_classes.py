"""recur's text classifier (configs/classify-text.yaml) against a bag-of-words logistic regression.

    python -m benchmarks text-classes FILE... [--set KEY=VALUE ...] [--seeds N] [--max-rows N] [--tag TAG]

The files are imported once by `recur run configs/classify-text.yaml` (`--format text-classes`,
the config's options; `--set` overrides any key, e.g. `data.source.label_column=class`), which
trains, evaluates on the test split and registers the model, as a user runs it (its own process,
a fresh runs folder). The baseline is scikit-learn's CountVectorizer (unigrams and bigrams,
lowercased) + TfidfTransformer + LogisticRegression (C chosen on the val split from 0.1-100),
fit on the SAME train rows (the dataset's row ids) with the raw texts as the files hold them, and
scored on the same test rows. `--max-rows N` keeps N rows of the files before import: drawn
uniformly without replacement with numpy's default_rng(0), written to a temporary JSON Lines file.

One split's test accuracy has a standard error of about 1.6 points on 600 texts, more than what
separates the two models on a small set. `--seeds N` repeats the whole comparison on N splits
(`data.seed` and `train.seed` 0..N-1: another stratified draw of train/val/test and other initial
weights, both models on the same rows each time) and reports each split, the means, and the mean
paired difference (recur - bag of words) with its standard error (the std of the N differences /
sqrt(N)): a difference is a real one when it is several of those standard errors from 0.

Pretrained word vectors go in as any other key: `--set model.embeddings=glove.6B.100d.txt`
(docs/tasks.md, "Pretrained word vectors"). Results: benchmarks/results/text-classes.json (or
text-classes-TAG.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import add_tag_argument, recur_run, write_results

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "classify-text.yaml"


def source_options(overrides: list[str]):
    from pipeline.config import load_config

    return load_config([CONFIG], overrides).data.source


def raw_rows(files: list[str], source) -> dict[str, tuple[str, str]]:
    """Row id -> (raw text, label) as the importer reads the files."""
    from pipeline.data.importers.sources import expand
    from pipeline.data.importers.text_classes import read_rows

    rows = read_rows(expand(files, ("csv", "tsv", "tab", "jsonl", "ndjson")), file_type=source.file_type,
                     text_column=source.text_column, label_column=source.label_column, level=source.level,
                     lowercase=source.lowercase)
    return {i: (t, lab) for i, t, lab, bad in zip(rows.ids, rows.texts, rows.labels, rows.reasons) if not bad}


def subsample(files: list[str], source, max_rows: int, tmp: str) -> list[str]:
    """max_rows records of the files, drawn with default_rng(0), as one JSON Lines file."""
    rows = list(raw_rows(files, source).values())
    draw = np.random.default_rng(0).choice(len(rows), min(max_rows, len(rows)), replace=False)
    keep = np.sort(draw)
    out = Path(tmp) / "sample.jsonl"
    records = ({source.text_column: rows[k][0], source.label_column: rows[k][1]} for k in keep)
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return [str(out)]


def run_recur(files: list[str], overrides: list[str], runs: str) -> tuple[dict[str, float], str, float]:
    """Run recur on the files: the run's metrics (plus best_val_accuracy: the highest epoch val
    accuracy, that of the checkpoint the test split scored, as the config monitors val_accuracy),
    the dataset's root, and the seconds it took (wall)."""
    from mlflow import MlflowClient

    from pipeline.config import load_config
    from pipeline.tracking.store import resolve_tracking_uri

    sets = [f"tracking.runs_dir={runs}", f"data.root={runs}/datasets/text",
            f"data.source.paths=[{','.join(files)}]", *overrides]
    done = recur_run(CONFIG, sets, runs)
    run_id = done.run_id
    cfg = load_config([CONFIG], sets)
    client = MlflowClient(resolve_tracking_uri(cfg))
    metrics = dict(client.get_run(run_id).data.metrics)
    # the config monitors val_accuracy (max): the best checkpoint is the epoch with the highest
    history = [m.value for m in client.get_metric_history(run_id, "val_accuracy")]
    if history:
        metrics["best_val_accuracy"] = max(history)
    return metrics, f"{runs}/datasets/text", done.wall_s


def bag_of_words(rows: dict[str, tuple[str, str]], root: str) -> dict[str, float]:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline

    from pipeline.data.dataset import read_split

    data = {}
    for split in ("train", "val", "test"):
        ids = read_split(root, split).column("id").to_pylist()
        data[split] = ([rows[i][0] for i in ids], [rows[i][1] for i in ids])
    best = None
    for c in (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0):
        model = make_pipeline(CountVectorizer(lowercase=True, ngram_range=(1, 2)), TfidfTransformer(),
                              LogisticRegression(C=c, max_iter=2000))
        model.fit(*data["train"])
        val = accuracy_score(data["val"][1], model.predict(data["val"][0]))
        if best is None or val > best[0]:
            best = (val, c, model)
    _, c, model = best
    predicted = model.predict(data["test"][0])
    return {"accuracy": float(accuracy_score(data["test"][1], predicted)),
            "macro_f1": float(f1_score(data["test"][1], predicted, average="macro")), "C": c,
            "rows": {s: len(v[0]) for s, v in data.items()}}


def compare(files: list[str], overrides: list[str], source, tmp: str) -> dict:
    """recur and the bag-of-words model on one split (the one `overrides` give): their scores."""
    metrics, root, wall = run_recur(files, overrides, tmp)
    baseline = bag_of_words(raw_rows(files, source), root)
    recur = {"accuracy": metrics["test_accuracy"], "macro_f1": metrics["test_macro_f1"],
             "val_accuracy": metrics.get("best_val_accuracy"),
             "majority_class_accuracy": metrics.get("test_baseline_accuracy")}
    return {"rows": baseline.pop("rows"), "recur": recur, "bag_of_words_logreg": baseline,
            "recur_wall_s": round(wall, 1)}


def paired_summary(splits: list[dict]) -> dict:
    """Means over the splits and the paired difference of test accuracy (recur - bag of words)."""
    recur = np.array([s["recur"]["accuracy"] for s in splits])
    bow = np.array([s["bag_of_words_logreg"]["accuracy"] for s in splits])
    diff = recur - bow
    n = len(splits)
    se = float(diff.std(ddof=1) / np.sqrt(n)) if n > 1 else None
    return {"splits": n, "recur_accuracy_mean": float(recur.mean()),
            "bag_of_words_accuracy_mean": float(bow.mean()), "difference_mean": float(diff.mean()),
            "difference_se": se, "recur_ahead_on": int((diff > 0).sum()), "level_on": int((diff == 0).sum()),
            "recur_val_accuracy_mean": float(np.mean([s["recur"]["val_accuracy"] or np.nan for s in splits])),
            "recur_wall_s_mean": float(np.mean([s["recur_wall_s"] for s in splits]))}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks text-classes")
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, default=1,
                        help="repeat on this many splits (data.seed and train.seed 0..N-1)")
    parser.add_argument("--max-rows", type=int, help="keep this many rows (seeded draw) before import")
    add_tag_argument(parser)
    args = parser.parse_args(argv)
    files = [str(Path(f).resolve()) for f in args.files]
    source = source_options(args.overrides)
    splits = []
    with tempfile.TemporaryDirectory(prefix="recur-text-classes-") as tmp:
        if args.max_rows:
            files = subsample(files, source, args.max_rows, tmp)
        print(f"{'seed':>4s} {'recur':>7s} {'bag of words':>12s} {'recur val':>9s} {'wall s':>7s}")
        for seed in range(args.seeds):
            runs = Path(tmp) / f"seed{seed}"
            runs.mkdir()
            done = compare(files, [*args.overrides, f"data.seed={seed}", f"train.seed={seed}"], source,
                           str(runs))
            splits.append({"seed": seed, **done})
            recur, bow = done["recur"], done["bag_of_words_logreg"]
            print(f"{seed:4d} {recur['accuracy']:7.4f} {bow['accuracy']:12.4f} "
                  f"{recur['val_accuracy'] or float('nan'):9.4f} {done['recur_wall_s']:7.0f}", flush=True)
    summary = paired_summary(splits)
    rows = splits[0]["rows"]
    print(f"\n{'model':44s} {'test accuracy (mean)':>20s}")
    print(f"{'recur (configs/classify-text.yaml)':44s} {summary['recur_accuracy_mean']:20.4f}")
    print(f"{'bag-of-words tf-idf + logistic regression':44s} {summary['bag_of_words_accuracy_mean']:20.4f}")
    se = summary["difference_se"]
    print(f"recur - bag of words: {summary['difference_mean']:+.4f}"
          + (f" (standard error {se:.4f}; recur ahead on {summary['recur_ahead_on']} of {len(splits)} splits)"
             if se is not None else "")
          + f"; rows {sum(rows.values())} (train/val/test {rows}) per split")
    write_results("text-classes", args.tag, files=[Path(f).name for f in args.files], settings=vars(args),
                  rows=rows, summary=summary, splits=splits)
    return 0
