"""Batch inference, fast tier: row checks, one batch through a real (untrained) model, the actor
plan, model names, output folders, device placement. No Ray, no MLflow server."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from pipeline.data.dataset import SPECIALS, make_table
from pipeline.data.preprocess import Preprocessing
from pipeline.inference.device import OnDevice, move
from pipeline.inference.model import PredictError, pack_dir, unpack_dir
from pipeline.inference.preflight import plan_actors, prepare_output, resolve_output
from pipeline.inference.rows import (
    BatchPredictor,
    InputSpec,
    error_kind,
    output_schema,
    row_errors,
    scatter,
)
from pipeline.tasks import build_task
from pipeline.tracking.model_ref import ModelRefError, ModelSpec

LABELS = ["neg", "pos"]


def _pre(channels: int = 3) -> Preprocessing:
    return Preprocessing(mean=[0.0] * channels, std=[1.0] * channels, labels=LABELS)


def _spec(channels: int = 3) -> InputSpec:
    return InputSpec(task="classify", preprocessing=_pre(channels).to_dict(), num_channels=channels)


class ServedTask:
    """What the registered pyfunc does (`RecurSequenceModel.predict`), without the MLflow folder:
    the real task's `predict` on a real model."""

    def __init__(self, channels: int = 3) -> None:
        from pipeline.config import RecurConfig

        cfg = RecurConfig(data={"task": "classify"}, model={"hidden_size": 8})
        self.task = build_task(cfg, _pre(channels))
        torch.manual_seed(0)
        self.model = self.task.build_model().eval()

    def predict(self, frame: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.task.predict(self.model, frame, dict(params or {}))


def _batch(xs: list[np.ndarray]) -> pa.Table:
    table = make_table([f"r{i}" for i in range(len(xs))], xs, [0] * len(xs))
    return table.drop_columns(["y"]).append_column("split", pa.array(["test"] * len(xs)))


def _rows() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    good = [rng.normal(size=(n, 3)).astype(np.float32) for n in (4, 9, 2)]
    nan = good[0].copy()
    nan[1, 2] = np.nan
    inf = good[1].copy()
    inf[0, 0] = np.inf
    return [good[0], nan, good[1], rng.normal(size=(5, 2)), np.zeros((0, 3)), inf, good[2]]


def test_row_errors_name_each_bad_row():
    errors = row_errors(_batch(_rows()), _spec())
    assert [e is None for e in errors] == [True, False, True, False, False, False, True]
    assert errors[1].startswith("NaN in x at step 1, channel 2")
    assert errors[3].startswith("wrong channel count: step 0 has 2 values, expected 3")
    assert errors[4] == "empty sequence"
    assert errors[5].startswith("inf in x")


def test_token_ids_outside_the_vocabulary_are_errors():
    table = pa.table({"id": ["a", "b", "c"], "x": pa.array([[4, 5], [4, 99], []], pa.list_(pa.int32()))})
    spec = InputSpec(task="seq2seq", preprocessing={}, num_channels=1, feature_kind="token", vocab_size=6)
    assert row_errors(table, spec) == [None, "token id 99 outside the vocabulary (expected 0..5)",
                                       "empty sequence"]


def test_error_kinds_drop_row_details():
    assert error_kind("NaN in x at step 3, channel 0 (2 values in all)") == "NaN in x"
    assert error_kind("wrong channel count: step 0 has 2 values, expected 3") == "wrong channel count"
    assert error_kind("token id 57 outside the vocabulary (expected 0..40)") == \
        "token id N outside the vocabulary"
    assert error_kind("prediction failed: ValueError: bad") == "prediction failed"
    assert error_kind("NaN in x at step 1, channel 0; inf in x at step 2, channel 1") == "NaN in x; inf in x"


def test_scatter_puts_values_back_in_place():
    out = scatter(pa.array(["a", "b"]), [1, 3], 4)
    assert out.to_pylist() == [None, "a", None, "b"]
    assert scatter(pa.array([], pa.float64()), [], 2).to_pylist() == [None, None]


def test_batch_keeps_every_row_and_predicts_the_valid_ones():
    served = ServedTask()
    params = {"probabilities": True}
    xs = _rows()
    schema = output_schema(served.predict(pd.DataFrame({"x": [xs[0].tolist()]}), params))
    assert schema.names == ["label", "label_index", "confidence", "prob_neg", "prob_pos"]
    assert schema.field("label").type == pa.string()
    out = BatchPredictor(served, _spec(), params, schema)(_batch(xs))

    assert out.column_names == ["id", "split", *schema.names, "error"]
    assert out.column("id").to_pylist() == [f"r{i}" for i in range(len(xs))]
    assert out.column("split").to_pylist() == ["test"] * len(xs)
    rows = out.to_pylist()
    good = [0, 2, 6]
    expected = served.predict(pd.DataFrame({"x": [xs[i].tolist() for i in good]}), params)
    for k, i in enumerate(good):
        assert rows[i]["error"] is None
        assert rows[i]["label"] == expected["label"][k]
        assert rows[i]["confidence"] == pytest.approx(float(expected["confidence"][k]), abs=1e-6)
        assert rows[i]["prob_neg"] + rows[i]["prob_pos"] == pytest.approx(1.0, abs=1e-5)
    for i in (1, 3, 4, 5):
        assert rows[i]["error"] and all(rows[i][c] is None for c in schema.names)


def test_a_batch_the_model_rejects_is_retried_row_by_row():
    # given rows that pass the checks for 2 channels but a model trained on 3
    served = ServedTask(channels=3)
    schema = output_schema(served.predict(pd.DataFrame({"x": [np.zeros((2, 3)).tolist()]})))
    xs = [np.ones((3, 2), np.float32), np.ones((4, 3), np.float32)]
    out = BatchPredictor(served, _spec(channels=2), {}, schema)(_batch(xs)).to_pylist()
    # then every row is still there, each with its own reason
    assert out[0]["error"].startswith("prediction failed: ValueError: expected 3 channels")
    assert out[1]["error"].startswith("wrong channel count")
    assert out[0]["label"] is None and out[1]["label"] is None


def test_classify_probabilities_are_opt_in():
    served = ServedTask()
    frame = pd.DataFrame({"x": [np.ones((3, 3)).tolist()]})
    assert list(served.predict(frame).columns) == ["label", "label_index", "confidence"]
    assert served.task.predict_params == {"probabilities": False}


def test_raw_inputs_turn_token_rows_back_into_text():
    vocab = [*SPECIALS, "a", "b", "\n"]
    table = pa.table({"id": ["s:0"], "x": pa.array([[4, 5, 6, 4]], pa.list_(pa.int32()))})
    lm = build_task(None, Preprocessing(mean=[], std=[], task="lm", feature_kind="token", vocab=vocab,
                                        task_params={"level": "char"}))
    assert lm.raw_inputs(table)["text"].tolist() == ["ab\na"]
    tag = build_task(None, Preprocessing(mean=[], std=[], labels=["O"], task="tag", feature_kind="token",
                                         vocab=vocab))
    assert tag.raw_inputs(table)["tokens"].tolist() == [["a", "b", "\n", "a"]]
    classify = build_task(None, _pre())
    assert classify.raw_inputs(_batch([np.ones((2, 3))]))["x"].tolist() == [[[1.0] * 3] * 2]


def test_actor_plan_from_cluster_resources():
    # a 2-CPU machine: one actor of 1 CPU, 1 CPU left for Ray Data's tasks (0.5 per read/write)
    assert plan_actors(2, 0) == plan_actors(2, 0, gpu=False)
    plan = plan_actors(2, 0)
    assert (plan.concurrency, plan.num_cpus, plan.num_gpus, plan.data_cpus) == (1, 1.0, 0.0, 0.5)
    plan = plan_actors(2, 0, concurrency=2)  # more replicas than CPUs: a share each
    assert (plan.concurrency, plan.num_cpus) == (2, 0.5)
    assert plan_actors(16, 0).concurrency == 15
    assert plan_actors(16, 0, reserve_cpus=4).concurrency == 12
    # GPUs: used when torch sees CUDA (or --gpu), one actor per GPU
    assert plan_actors(16, 4, cuda_available=False).num_gpus == 0
    plan = plan_actors(16, 4, cuda_available=True)
    assert (plan.concurrency, plan.num_gpus, plan.num_cpus) == (4, 1.0, 1.0)
    with pytest.raises(PredictError, match="no GPUs"):
        plan_actors(4, 0, gpu=True)
    with pytest.raises(PredictError, match="2 GPUs"):
        plan_actors(16, 2, gpu=True, concurrency=3)
    with pytest.raises(PredictError, match="reserve_cpus_for_data"):
        plan_actors(1, 0)
    with pytest.raises(PredictError, match=">= 1"):
        plan_actors(4, 0, concurrency=0)


def test_model_names():
    assert ModelSpec.parse("toy") == ModelSpec("toy", alias="champion")
    assert ModelSpec.parse("toy@challenger") == ModelSpec("toy", alias="challenger")
    assert ModelSpec.parse("models:/toy/3") == ModelSpec("toy", version="3")
    assert str(ModelSpec.parse("toy/3")) == "toy/3"
    for bad in ("", "toy@", "toy/", "toy/latest", "@champion"):
        with pytest.raises(ModelRefError):
            ModelSpec.parse(bad)


def test_output_folder_must_be_empty_unless_overwrite(tmp_path):
    filesystem, path = resolve_output(str(tmp_path / "out"))
    prepare_output(filesystem, path, overwrite=False)  # created
    (tmp_path / "out" / "old.parquet").write_text("stale")
    with pytest.raises(PredictError, match="--overwrite"):
        prepare_output(filesystem, path, overwrite=False)
    prepare_output(filesystem, path, overwrite=True)
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PredictError, match="is a file"):
        prepare_output(*resolve_output(str(tmp_path / "a-file")), overwrite=False)


def test_model_folder_round_trips_as_bytes(tmp_path):
    (tmp_path / "m" / "artifacts").mkdir(parents=True)
    (tmp_path / "m" / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "m" / "artifacts" / "w.bin").write_bytes(b"\0\1\2")
    unpack_dir(pack_dir(str(tmp_path / "m")), str(tmp_path / "copy"))
    assert (tmp_path / "copy" / "MLmodel").read_text() == "flavors: {}\n"
    assert (tmp_path / "copy" / "artifacts" / "w.bin").read_bytes() == b"\0\1\2"


@dataclasses.dataclass
class Decoded:
    tokens: list
    scores: torch.Tensor


class Toy(torch.nn.Module):
    uses_chars = True

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, x, lengths, state=None):
        return self.linear(x), (x.sum(), lengths)

    def decode(self, x):
        return Decoded(tokens=[[1, 2]], scores=self.linear(x)[:, 0])


def test_on_device_moves_arguments_in_and_results_out():
    nested = move({"a": (torch.zeros(1), [torch.ones(2)]), "b": Decoded([1], torch.zeros(1))}, "meta")
    assert nested["a"][0].is_meta and nested["a"][1][0].is_meta and nested["b"].scores.is_meta
    assert nested["b"].tokens == [1]
    # on the CPU the wrapper is transparent: same results, attributes and methods pass through
    toy = Toy()
    wrapped = OnDevice(toy, "cpu")
    x = torch.ones(3, 2)
    out, (total, lengths) = wrapped(x, torch.tensor([1, 2, 3]))
    assert torch.equal(out, toy(x, None)[0]) and total.item() == 6.0 and lengths.device.type == "cpu"
    assert wrapped.eval() is toy and wrapped.uses_chars is True
    assert isinstance(wrapped.decode(x), Decoded)
