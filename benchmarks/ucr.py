"""recur's generic classifier against 1-NN DTW and 1-NN Euclidean on UCR/UEA datasets.

    python -m benchmarks ucr DIR [DIR ...] [--config OVERLAY ...] [--set KEY=VALUE ...]
                             [--limit-train-rows N] [--missing POLICY] [--jobs N] [--work-dir DIR]

Each DIR is one dataset folder holding `<Name>_TRAIN.<ext>` and `<Name>_TEST.<ext>`, ext `.ts`
(UCR/UEA ts format, `recur data import --format ts`) or `.tsv` / `.txt` (UCR archive text files,
`--format ucr`). Per dataset, as a user would and with nothing set for the dataset:

1. `recur data import --format ts|ucr <Name>_TRAIN.<ext> <Name>_TEST.<ext> --out <work>/datasets/<name>`:
   the TEST file is the test split, val is carved from TRAIN (the importer's default 20%).
2. `recur -q run configs/classify.yaml --set data.root=... --set registry.model_name=ucr-<name>
   --set tracking.runs_dir=<work>/runs-<name>` (plus `--set` items given here, after these), a
   subprocess, one at a time. Read back from MLflow: test accuracy and macro F1, optimizer steps
   per worker (`steps_done` of the last epoch), epochs run, the `budget.*` params, the gate's
   decision and the majority-class baseline (`test_baseline_accuracy`). `wall_s` is the command's
   wall time (process start, Ray start, import of nothing: the dataset is already imported).
3. Baselines with tslearn (the `bench` extra), on the same TRAIN (all of it: train + val of the
   run) and TEST cases, parsed with recur's own readers and timed (fit + predict; numba compiles
   once before the first timing):
   - 1-NN DTW, full window (no constraint), `KNeighborsTimeSeriesClassifier(n_neighbors=1,
     metric="dtw")`; multichannel sets use dependent DTW (squared Euclidean distance between the
     steps' channel vectors). Unequal lengths are compared as they are (tslearn pads with NaN and
     DTW skips the padding).
   - 1-NN Euclidean: on equal-length sets the series as they are; on unequal-length sets every
     series is first RESAMPLED (linear interpolation per channel) to the longest length of
     TRAIN and TEST, so the distance compares the same relative positions (`ed_length` records it).
   Neither baseline z-normalizes: the UCR files are already z-normalized per series; recur
   normalizes with the train split's statistics as always.

`--limit-train-rows N` keeps N TRAIN cases, taken round-robin over the classes in file order
(every class kept when N >= classes), for a quick check; the subset is written as a new
`<Name>_TRAIN.<ext>` in the work folder and used by recur and the baselines alike.

Writes benchmarks/results/ucr.json (ucr-TAG.json with `--tag`) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import add_tag_argument, write_results
from benchmarks.panel import (
    REPO,
    CommandFailed,
    fmt,
    markdown_table,
    read_run,
    recur,
    run_each,
    train,
    versions,
)
from pipeline.tasks.classify import resample

FORMATS = {".ts": "ts", ".tsv": "ucr", ".txt": "ucr"}  # file extension -> `recur data import --format`


@dataclass(frozen=True)
class UcrSet:
    """One dataset folder: its name (`<Name>` of the files), import format and the two files."""

    name: str
    fmt: str
    train: Path
    test: Path


@dataclass
class Cases:
    """The cases of one file: per case a float32 (T, C) array, its label and its 1-based line."""

    series: list[np.ndarray] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def find_set(folder: Path) -> UcrSet:
    """The `<Name>_TRAIN.<ext>` / `<Name>_TEST.<ext>` pair in `folder` (ext .ts, .tsv or .txt)."""
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not a folder; expected a dataset folder holding <Name>_TRAIN.<ext> and "
                         f"<Name>_TEST.<ext> with ext one of {', '.join(FORMATS)}")
    pairs = {}
    for split in ("TRAIN", "TEST"):
        found = sorted(p for p in folder.glob(f"*_{split}.*") if p.suffix.lower() in FORMATS)
        if len(found) != 1:
            raise SystemExit(f"{folder}: expected exactly one *_{split}.<ext> file with ext one of "
                             f"{', '.join(FORMATS)}, found {[p.name for p in found] or 'none'}")
        pairs[split] = found[0]
    name = pairs["TRAIN"].name.rsplit("_TRAIN.", 1)[0]
    fmt = FORMATS[pairs["TRAIN"].suffix.lower()]
    if FORMATS[pairs["TEST"].suffix.lower()] != fmt or pairs["TEST"].name.rsplit("_TEST.", 1)[0] != name:
        raise SystemExit(f"{folder}: {pairs['TRAIN'].name} and {pairs['TEST'].name} are not one dataset's "
                         "pair (expected the same <Name> and format)")
    return UcrSet(name, fmt, pairs["TRAIN"], pairs["TEST"])


def read_cases(path: Path, fmt: str, missing: str) -> Cases:
    """Parse a TRAIN or TEST file with recur's own readers; missing values filled by `missing`
    (as `recur data import --missing` would; "error" raises on one)."""
    from pipeline.data.importers.ts_format import fill_missing, parse_ts
    from pipeline.data.importers.ucr import parse_ucr

    if fmt == "ts":
        data = parse_ts(str(path), missing=missing)
        if data.labels is None:
            raise SystemExit(f"{path}: no class labels (@classLabel true); a classification set needs them")
        return Cases(list(data.series), list(data.labels), list(data.line_numbers))
    ucr = parse_ucr(str(path), path.name)
    empty = {index for index, _ in ucr.empty}
    cases = Cases()
    for index, (x, label, line) in enumerate(zip(ucr.series, ucr.labels, ucr.line_numbers)):
        if index in empty:
            continue  # no values: the importer fails on it (or quarantines it), nothing to compare
        try:
            cases.series.append(fill_missing(x, missing))
        except ValueError as error:
            raise SystemExit(f"{path}:{line}: {error}") from error
        cases.labels.append(label)
        cases.lines.append(line)
    return cases


def round_robin(labels: list[str], limit: int) -> list[int]:
    """Indices of `limit` cases taken one class at a time (classes in order of first appearance,
    cases in file order), so every class is kept when `limit` >= the number of classes."""
    queues: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        queues.setdefault(label, []).append(index)
    chosen: list[int] = []
    while len(chosen) < min(limit, len(labels)):
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return sorted(chosen)


def write_subset(source: Path, target: Path, fmt: str, lines: set[int]) -> None:
    """Copy `source` to `target` keeping only the cases on `lines` (1-based); a .ts file keeps its
    header (every line up to and including `@data`)."""
    kept = []
    in_header = fmt == "ts"
    for number, line in enumerate(source.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if in_header:
            kept.append(line)
            in_header = not line.strip().lower().startswith("@data")
        elif number in lines:
            kept.append(line)
    target.write_text("\n".join(kept) + "\n", encoding="utf-8")


def nn1(train: Cases, test: Cases, metric: str, jobs: int) -> tuple[float, float]:
    """(test accuracy, seconds of fit + predict) of tslearn's 1-NN with `metric` (dtw|euclidean)."""
    with warnings.catch_warnings():  # tslearn warns at import that h5py (unused here) is absent
        warnings.simplefilter("ignore", UserWarning)
        from tslearn.neighbors import KNeighborsTimeSeriesClassifier
        from tslearn.utils import to_time_series_dataset

    # NaN-padded (N, T_max, C) arrays; DTW skips the padding, equal lengths have none
    x_train, x_test = to_time_series_dataset(train.series), to_time_series_dataset(test.series)
    start = time.perf_counter()
    model = KNeighborsTimeSeriesClassifier(n_neighbors=1, metric=metric, n_jobs=jobs)
    predicted = model.fit(x_train, np.array(train.labels)).predict(x_test)
    seconds = time.perf_counter() - start
    return float(np.mean(predicted == np.array(test.labels))), seconds


def warm_up() -> None:
    """Compile tslearn's numba kernels on two tiny sets, so the first timing is not their compile."""
    unequal = Cases([np.zeros((3, 1), np.float32), np.ones((4, 1), np.float32)], ["a", "b"], [1, 2])
    equal = Cases([np.zeros((3, 1), np.float32), np.ones((3, 1), np.float32)], ["a", "b"], [1, 2])
    nn1(unequal, unequal, "dtw", 1)
    nn1(equal, equal, "euclidean", 1)  # Euclidean needs equal lengths (NaN padding is an error)


def baselines(train: Cases, test: Cases, jobs: int) -> dict[str, Any]:
    """1-NN DTW (full window) and 1-NN Euclidean accuracy and seconds (see the module docstring)."""
    dtw_acc, dtw_s = nn1(train, test, "dtw", jobs)
    lengths = {x.shape[0] for x in train.series + test.series}
    ed_length = max(lengths)
    if len(lengths) > 1:
        train = Cases(list(resample(train.series, ed_length)), train.labels, train.lines)
        test = Cases(list(resample(test.series, ed_length)), test.labels, test.lines)
    ed_acc, ed_s = nn1(train, test, "euclidean", jobs)
    return {"dtw_accuracy": dtw_acc, "dtw_s": round(dtw_s, 2), "ed_accuracy": ed_acc, "ed_s": round(ed_s, 2),
            "ed_length": ed_length, "ed_resampled": len(lengths) > 1}


def cases_digest(train: Cases, test: Cases) -> str:
    """sha256 over both splits' values, shapes and labels: the 1-NN baselines' whole input."""
    digest = hashlib.sha256()
    for cases in (train, test):
        for series, label in zip(cases.series, cases.labels, strict=True):
            digest.update(repr((series.shape, str(series.dtype), label)).encode())
            digest.update(np.ascontiguousarray(series).tobytes())
    return digest.hexdigest()


def cached_baselines(train: Cases, test: Cases, jobs: int, cache: Path | None) -> dict[str, Any]:
    """`baselines`, or the figures a previous run saved in `cache` for exactly the same cases.

    1-NN DTW is deterministic but took 36 minutes on PLAID with 2 cores, so repeated runs of the
    panel (while recur changes, the baselines do not) reuse it; a reused row says so
    (`baselines_cached`) and keeps the seconds it was measured in.
    """
    key = cases_digest(train, test)
    saved = json.loads(cache.read_text(encoding="utf-8")) if cache is not None and cache.exists() else {}
    if key in saved:
        return {**saved[key], "baselines_cached": True}
    figures = baselines(train, test, jobs)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**saved, key: figures}, indent=1), encoding="utf-8")
    return {**figures, "baselines_cached": False}


def run_set(found: UcrSet, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Import, train and compare one dataset; the row of the results for it."""
    folder = found.train.parent
    slug = re.sub(r"[^a-z0-9]+", "-", found.name.lower()).strip("-") or "set"
    missing = args.missing or "error"
    train_cases = read_cases(found.train, found.fmt, missing)
    test_cases = read_cases(found.test, found.fmt, missing)
    train_file = found.train
    if args.limit_train_rows:
        keep = round_robin(train_cases.labels, args.limit_train_rows)
        train_cases = Cases([train_cases.series[i] for i in keep], [train_cases.labels[i] for i in keep],
                            [train_cases.lines[i] for i in keep])
        (work / "limited").mkdir(parents=True, exist_ok=True)
        train_file = work / "limited" / found.train.name
        write_subset(found.train, train_file, found.fmt, set(train_cases.lines))

    lengths = [x.shape[0] for x in train_cases.series + test_cases.series]
    row: dict[str, Any] = {
        "name": found.name, "folder": str(folder), "format": found.fmt,
        "rows": {"train_file": len(train_cases.labels), "test_file": len(test_cases.labels)},
        "length": {"min": min(lengths), "mean": round(float(np.mean(lengths)), 1), "max": max(lengths)},
        "channels": int(train_cases.series[0].shape[1]), "classes": len(set(train_cases.labels)),
    }

    dataset = work / "datasets" / slug
    runs = work / f"runs-{slug}"
    import_args = ["data", "import", "--format", found.fmt, str(train_file), str(found.test),
                   "--out", str(dataset)]
    if args.missing:
        import_args += ["--missing", args.missing]
    overrides = [f"data.root={dataset}", f"registry.model_name=ucr-{slug}", f"tracking.runs_dir={runs}",
                 *args.overrides]
    print(f"[{found.name}] import, then recur run ({row['rows']['train_file']} train / "
          f"{row['rows']['test_file']} test cases, length {row['length']['min']}-{row['length']['max']}, "
          f"{row['classes']} classes)", flush=True)
    try:
        row["import_s"] = round(recur(import_args, cwd=work).seconds, 2)
        run_id, finished = train(args.configs, overrides, cwd=work)
    except CommandFailed as error:
        print(f"[{found.name}] FAILED: {error}", flush=True)
        row["error"] = str(error)
    else:
        run = read_run(args.configs, overrides, run_id)
        metrics, decision = run["metrics"], run["decision"] or {}
        row.update({
            "run_id": run_id, "split_rows": run["rows"],
            "runs_dir": str(runs) if args.work_dir else None,  # a temporary folder is removed at the end
            "recur_accuracy": metrics.get("test_accuracy"), "recur_macro_f1": metrics.get("test_macro_f1"),
            "steps": int(metrics["steps_done"]) if "steps_done" in metrics else None,
            "epochs": int(metrics["epochs_run"]) if "epochs_run" in metrics else None,
            "budget": run["budget"], "wall_s": round(finished.seconds, 1),
            "train_s": round(run["train_s"], 1) if run["train_s"] else None,
            "gate_decision": decision.get("decision"), "gate_reason": decision.get("reason"),
            "baseline_majority": metrics.get("test_baseline_accuracy"),
            "recur_nn1_euclidean": metrics.get("test_baseline_nn1_euclidean_accuracy"),
        })
    print(f"[{found.name}] 1-NN DTW and Euclidean", flush=True)
    row.update(cached_baselines(train_cases, test_cases, args.jobs, args.baselines_cache))
    if row.get("recur_accuracy") is not None:
        row["recur_minus_dtw"] = round(row["recur_accuracy"] - row["dtw_accuracy"], 4)
    return row


def table(rows: list[dict[str, Any]]) -> str:
    header = ["set", "train/test", "length", "ch", "cls", "recur acc", "macro F1", "steps", "epochs",
              "wall s", "gate", "majority", "1-NN DTW", "DTW s", "1-NN ED", "ED s", "recur - DTW"]
    body = []
    for r in rows:
        length = r["length"]
        span = f"{length['min']}" if length["min"] == length["max"] else f"{length['min']}-{length['max']}"
        body.append([r["name"], f"{r['rows']['train_file']}/{r['rows']['test_file']}", span, r["channels"],
                     r["classes"], r.get("recur_accuracy"), r.get("recur_macro_f1"), r.get("steps"),
                     r.get("epochs"), fmt(r.get("wall_s"), 0), r.get("gate_decision", "FAILED"),
                     r.get("baseline_majority"), r["dtw_accuracy"], fmt(r["dtw_s"], 1),
                     r["ed_accuracy"], fmt(r["ed_s"], 1), fmt(r.get("recur_minus_dtw"), 3)])
    return markdown_table(header, body)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ucr",
                                     description="recur's generic classifier against 1-NN DTW / Euclidean")
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR",
                        help="dataset folders with <Name>_TRAIN.<ext> and <Name>_TEST.<ext> "
                             "(.ts, .tsv, .txt)")
    parser.add_argument("--config", dest="configs", action="append", type=Path, default=None,
                        help="config overlay(s) for recur run, merged left to right "
                             "(default: configs/classify.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to recur run after the benchmark's own (repeatable)")
    parser.add_argument("--limit-train-rows", type=int, default=None, metavar="N",
                        help="keep N TRAIN cases, round-robin over the classes (a quick check)")
    parser.add_argument("--missing", default=None, choices=["zero", "ffill", "interpolate"],
                        help="missing-value policy for import and baselines (default: the importer's, error)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes for the 1-NN baselines (tslearn n_jobs)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the imported datasets and runs here (default: a temporary folder, "
                             "removed)")
    parser.add_argument("--baselines-cache", type=Path, default=None, metavar="FILE",
                        help="reuse 1-NN figures saved here for the same train/test cases, and save new "
                             "ones (default: compute them every run)")
    add_tag_argument(parser)
    args = parser.parse_args(argv)
    args.configs = [c.resolve() for c in (args.configs or [REPO / "configs" / "classify.yaml"])]
    if args.limit_train_rows is not None and args.limit_train_rows < 1:
        parser.error(f"--limit-train-rows must be >= 1, got {args.limit_train_rows}")
    if importlib.util.find_spec("tslearn") is None:
        raise SystemExit("the 1-NN baselines need tslearn: pip install -c constraints-cpu.txt -e '.[bench]'")
    warm_up()

    sets = [find_set(folder.resolve()) for folder in args.folders]  # every folder checked before training
    if len({s.name for s in sets}) < len(sets):
        parser.error(f"two folders hold the same dataset name: {[s.name for s in sets]}")

    rows = run_each(sets, lambda item, work: run_set(item, args, work), args.work_dir, "recur-ucr-")
    print()
    print(table(rows))
    settings = {"configs": [str(c) for c in args.configs], "overrides": args.overrides,
                "limit_train_rows": args.limit_train_rows, "missing": args.missing, "jobs": args.jobs}
    write_results("ucr", tag=args.tag, settings=settings,
                  versions=versions("recur", "torch", "ray", "mlflow", "numpy", "tslearn"), sets=rows)
    return 1 if any("error" in r for r in rows) else 0
