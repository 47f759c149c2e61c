"""`recur predict` end to end: a model registered by the real pipeline (real local Ray, real
`mlflow server`), then batch inference with Ray Data over a dataset, checked against the same
model loaded in-process with `mlflow.pyfunc`.

One model (a tiny GRU, 1 epoch) is trained once per session (conftest `champion`) and shared.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import CHAMPION_MODEL
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.data.dataset import make_table, read_split, write_dataset
from pipeline.tracking.store import use_tracking_uri

pytestmark = pytest.mark.slow

MODEL = CHAMPION_MODEL
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registered(champion):
    """(tracking uri, dataset folder): version 1 of MODEL, @champion, trained on the toy data
    (the session's shared `champion`)."""
    return champion.tracking_uri, champion.dataset


def _in_process(uri: str, x: list, **params) -> pd.DataFrame:
    import mlflow

    with use_tracking_uri(uri):
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}/1")
    return model.predict(pd.DataFrame({"x": x}), params=params or None)


def test_predict_every_split_matches_the_registered_model(registered, tmp_path, capsys):
    uri, dataset = registered
    capsys.readouterr()
    out = tmp_path / "out"
    # when the champion predicts every split, on two actors, in batches of 16 rows
    args = ["--data", str(dataset), "--out", str(out), "--tracking-uri", uri,
            "--runs-dir", str(tmp_path / "runs"), "--batch-size", "16", "--concurrency", "2"]
    assert main(["predict", MODEL, *args]) == 0
    printed = capsys.readouterr().out

    inputs = {s: read_split(str(dataset), s) for s in ("train", "val", "test")}
    # then every row is there once, with its split (rows are matched by id: order is not promised)
    expected_ids = [i for s in inputs for i in inputs[s].column("id").to_pylist()]
    result = _in_order(pq.read_table(out), expected_ids)
    assert result.num_rows == len(expected_ids) == 176
    assert result.column("id").to_pylist() == expected_ids
    assert result.column("split").to_pylist() == [s for s in inputs for _ in range(inputs[s].num_rows)]
    assert result.column_names == ["id", "split", "label", "label_index", "confidence", "prob_neg",
                                   "prob_pos", "error"]
    assert result.column("error").null_count == result.num_rows
    # and the predictions are the registered model's, on the same rows, loaded in-process
    x = [row for s in inputs for row in inputs[s].column("x").to_pylist()]
    expected = _in_process(uri, x, probabilities=True)
    assert result.column("label").to_pylist() == expected["label"].tolist()
    assert result.column("label_index").to_pylist() == expected["label_index"].tolist()
    np.testing.assert_allclose(result.column("confidence").to_numpy(), expected["confidence"], atol=1e-6)
    probs = np.stack([result.column("prob_neg").to_numpy(), result.column("prob_pos").to_numpy()], 1)
    np.testing.assert_allclose(probs, expected[["prob_neg", "prob_pos"]].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs.max(axis=1), result.column("confidence").to_numpy(), atol=1e-6)
    # the summary says what ran, and the same record is next to the Parquet files
    assert "rows in       176 (train 96, val 32, test 48)" in printed
    assert "rows out      176" in printed and "failed rows   0" in printed
    assert f"{MODEL} version 1 (@champion)" in printed and str(out) in printed and "rows/s" in printed
    record = json.loads((out / "_recur_predict.json").read_text())
    assert record["model_uri"] == f"models:/{MODEL}/1" and record["rows_out_total"] == 176
    assert record["params"] == {"probabilities": True}

    # the prediction is a recorded step with its own MLflow run
    client = MlflowClient(uri)
    [run_id] = [line.split()[-1] for line in printed.splitlines() if line.startswith("  MLflow run ")]
    run = client.get_run(run_id)
    assert run.data.tags["recur.kind"] == "predict" and run.data.tags["recur.step.predict"] == "succeeded"
    assert run.data.params["model"] == f"models:/{MODEL}/1" and run.data.metrics["rows_out"] == 176
    assert main(["runs", "show", run_id, "--tracking-uri", uri]) == 0
    assert "  predict   succeeded" in capsys.readouterr().out

    # the same model, data, output and options again: skipped, the output untouched
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["predict", MODEL, *args]) == 0
    printed = capsys.readouterr().out
    assert "recur predict: skipped" in printed and run_id in printed
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written
    # --force predicts again; into the reused, non-empty folder only with --overwrite (the
    # experiment is shared with the other tests of the session's champion: count what this adds)
    def predict_runs() -> int:
        return len(client.search_runs([run.info.experiment_id], "tags.`recur.kind` = 'predict'"))

    runs_before = predict_runs()
    assert main(["predict", MODEL, *args, "--force"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # other options (here the batch size) are another prediction: also refused without --overwrite,
    # before a step record or an MLflow run of it exists
    records = set((tmp_path / "runs" / "steps").iterdir())
    assert main(["predict", MODEL, "--data", str(dataset), "--out", str(out), "--tracking-uri", uri,
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert set((tmp_path / "runs" / "steps").iterdir()) == records
    assert predict_runs() == runs_before
    assert pq.read_table(out).num_rows == 176


def _in_order(table, ids: list[str]):
    """`table`'s rows in the order of `ids`; fails if an id is missing or repeated."""
    position = {row_id: i for i, row_id in enumerate(table.column("id").to_pylist())}
    assert len(position) == table.num_rows == len(ids), "ids repeated or rows missing"
    return table.take([position[row_id] for row_id in ids])


def _with_bad_rows(dataset: Path, root: Path) -> tuple[Path, dict[str, str]]:
    """The toy dataset with rows planted in its test split that break the contract."""
    test = read_split(str(dataset), "test")
    ids = test.column("id").to_pylist()
    xs = [np.asarray(x, np.float32) for x in test.column("x").to_pylist()]
    ys = test.column("y").to_pylist()
    nan = xs[0].copy()
    nan[2, 1] = np.nan
    inf = xs[1].copy()
    inf[0, 0] = np.inf
    planted = {"bad:nan": nan, "bad:channels": np.ones((6, 2), np.float32),
               "bad:empty": np.zeros((0, 3), np.float32), "bad:inf": inf}
    # interleaved, so bad rows sit between good ones in the same batches
    order = [(ids[i], xs[i], ys[i]) for i in range(len(ids))]
    for k, (row_id, x) in enumerate(planted.items()):
        order.insert(3 + 5 * k, (row_id, x, 0))
    tables = {s: read_split(str(dataset), s) for s in ("train", "val")}
    tables["test"] = make_table([o[0] for o in order], [o[1] for o in order], [o[2] for o in order])
    out = root / "toy-bad"
    write_dataset(str(out), tables, name="toy-bad", task="classify", labels=["neg", "pos"], sources=[],
                  import_params={"generator": "toy with planted rows"})
    reasons = {"bad:nan": "NaN in x", "bad:channels": "wrong channel count", "bad:empty": "empty sequence",
               "bad:inf": "inf in x"}
    return out, reasons


def test_rows_failing_validation_are_kept_with_their_reason(registered, tmp_path, capsys):
    uri, dataset = registered
    bad, reasons = _with_bad_rows(dataset, tmp_path)
    capsys.readouterr()
    out = tmp_path / "out"
    # when version 1 predicts the test split, through the `ray job submit` entry point
    spec = importlib.util.spec_from_file_location("predict_job", REPO / "jobs" / "predict.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    assert job.main([f"{MODEL}/1", "--data", str(bad), "--out", str(out), "--split", "test",
                     "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs"), "--batch-size", "8"]) == 0
    printed = capsys.readouterr().out

    test = read_split(str(bad), "test")
    result = _in_order(pq.read_table(out), test.column("id").to_pylist())
    # then rows in == rows out, every id once, only the test split
    assert result.column("id").to_pylist() == test.column("id").to_pylist()
    assert set(result.column("split").to_pylist()) == {"test"}
    rows = {r["id"]: r for r in result.to_pylist()}
    # the planted rows have a null prediction and the reason
    for row_id, reason in reasons.items():
        row = rows[row_id]
        assert row["error"].startswith(reason), row
        assert all(row[c] is None for c in ("label", "label_index", "confidence", "prob_neg", "prob_pos"))
    # every other row is predicted as the model does in-process
    good = [i for i in test.column("id").to_pylist() if i not in reasons]
    assert all(rows[i]["error"] is None for i in good)
    x = [x for i, x in zip(test.column("id").to_pylist(), test.column("x").to_pylist()) if i not in reasons]
    assert [rows[i]["label"] for i in good] == _in_process(uri, x)["label"].tolist()
    # and the summary counts the failures by kind, with an example
    assert "rows in       52 (test 52)" in printed and "rows out      52" in printed
    assert "failed rows   4" in printed
    for row_id, reason in reasons.items():
        line = next(line for line in printed.splitlines() if line.strip().startswith(reason))
        assert f"1  e.g. test row {row_id!r}" in line


def test_predict_refuses_a_model_that_does_not_fit_the_data(registered, tmp_path, capsys):
    uri, dataset = registered
    # a dataset with 2 channels: the model takes 3
    rng = np.random.default_rng(0)
    tables = {s: make_table([f"{s}:{i}" for i in range(4)], [rng.normal(size=(5, 2)) for _ in range(4)],
                            [i % 2 for i in range(4)]) for s in ("train", "val", "test")}
    other = tmp_path / "two-channels"
    write_dataset(str(other), tables, name="two", task="classify", labels=["neg", "pos"], sources=[],
                  import_params={})
    capsys.readouterr()
    assert main(["predict", MODEL, "--data", str(other), "--out", str(tmp_path / "o"),
                 "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "3 channels per step, the dataset has 2" in capsys.readouterr().err
    # an unknown model or alias is named, before any work
    assert main(["predict", f"{MODEL}@nope", "--data", str(dataset), "--out", str(tmp_path / "o"),
                 "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert f"no registered model {MODEL}@nope" in capsys.readouterr().err
    # a param the model does not take lists the ones it does
    assert main(["predict", MODEL, "--data", str(dataset), "--out", str(tmp_path / "o"),
                 "--tracking-uri", uri, "--runs-dir", str(tmp_path / "runs"), "--param", "beam_size=4"]) == 2
    assert "probabilities (default False)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert not (tmp_path / "runs" / "steps").exists()  # refused before its step or MLflow run began


def test_predict_runs_again_when_its_input_changed_in_place(registered, tmp_path, capsys):
    # given a copy of the data, predicted once
    uri, dataset = registered
    data = Path(shutil.copytree(dataset, tmp_path / "data"))
    args = ["--data", str(data), "--out", str(tmp_path / "out"), "--tracking-uri", uri,
            "--runs-dir", str(tmp_path / "runs"), "--split", "test", "--overwrite"]
    assert main(["predict", MODEL, *args]) == 0
    capsys.readouterr()
    assert main(["predict", MODEL, *args]) == 0
    assert "recur predict: skipped" in capsys.readouterr().out  # nothing changed
    # when one value of the test split is rewritten in place (its manifest still names the old hash)
    part = data / "test" / "part-00000.parquet"
    table = pq.read_table(part)
    xs = table.column("x").to_pylist()
    xs[0][0][0] += 1.0
    pq.write_table(table.set_column(1, "x", pa.array(xs, table.schema.field("x").type)), part)
    # then the prediction runs again rather than keeping the stale output
    assert main(["predict", MODEL, *args]) == 0
    assert "recur predict: skipped" not in capsys.readouterr().out


def test_the_model_is_looked_up_in_mlflow_registry_uri_when_it_is_set(registered, tmp_path, monkeypatch):
    # given a tracking store that has no registered model, and MLFLOW_REGISTRY_URI naming the
    # registry that has the champion (before: recur predict looked in the tracking store only)
    from pipeline.tracking.model_ref import ModelSpec, resolve_version
    from pipeline.tracking.store import default_tracking_uri

    uri, _ = registered
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    local = default_tracking_uri(str(tmp_path / "runs"))
    version, run_id = resolve_version(ModelSpec.parse(MODEL), local)
    assert version == "1" and run_id == MlflowClient(uri).get_model_version(MODEL, "1").run_id
