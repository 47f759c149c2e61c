"""Batch inference for every task, fast tier: a tiny real dataset of each task (imported by
recur's importers), a real untrained model served by the task's own `predict`, one batch through
`BatchPredictor`. Every row comes out, with what `predict` returns for that task."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from pipeline.config import RecurConfig
from pipeline.data.dataset import read_manifest, read_split
from pipeline.data.preprocess import Preprocessing
from pipeline.inference.rows import BatchPredictor, InputSpec, output_schema
from pipeline.tasks import build_task


def _conll(tmp_path) -> tuple[str, dict]:
    from pipeline.data.importers.conll import import_conll

    src = tmp_path / "src"
    src.mkdir()
    sentences = ["Peter B-PER\nvisited O\nParis B-LOC\n", "the O\nEU B-ORG\nmet O\n", "Mary B-PER\nleft O\n"]
    (src / "toy_TRAIN.txt").write_text("\n".join(sentences * 3))
    (src / "toy_VAL.txt").write_text(sentences[0])
    (src / "toy_TEST.txt").write_text("\n".join([*sentences, "Zoe B-PER\nmet O\nParis B-LOC\n"]))
    import_conll([str(src)], str(tmp_path / "ds"))
    return str(tmp_path / "ds"), {"char_features": True, "embedding_size": 6}


def _pairs(tmp_path) -> tuple[str, dict]:
    from pipeline.data.importers.tsv import import_pairs

    rng = random.Random(0)
    lines = ["".join(rng.choice("abcdef") for _ in range(rng.randint(2, 6))) for _ in range(60)]
    (tmp_path / "p.tsv").write_text("".join(f"{t}\t{t[::-1]}\n" for t in lines))
    import_pairs(str(tmp_path / "p.tsv"), str(tmp_path / "ds"))
    return str(tmp_path / "ds"), {"embedding_size": 6, "max_decode_length": 8}


def _text(tmp_path) -> tuple[str, dict]:
    from pipeline.data.importers.text import import_text

    (tmp_path / "t.txt").write_text("the cat sat on the mat.\nthe dog sat on the log.\n" * 60)
    import_text(str(tmp_path / "t.txt"), str(tmp_path / "ds"), chunk_length=64)
    return str(tmp_path / "ds"), {"embedding_size": 6}


def _series(tmp_path) -> tuple[str, dict]:
    from pipeline.data.importers.csv import import_csv

    t = np.arange(200)
    (tmp_path / "s.csv").write_text("t,a,b\n" + "".join(f"{i},{np.sin(i / 5):.4f},{i % 7}\n" for i in t))
    import_csv(str(tmp_path / "s.csv"), str(tmp_path / "ds"), time_column="t", value_columns=["a", "b"],
               window=12, horizon=3, stride=2)
    return str(tmp_path / "ds"), {}


class Served:
    """The registered model's predict (`RecurSequenceModel.predict`): the task on its model."""

    def __init__(self, task, model) -> None:
        self.task, self.model = task, model

    def predict(self, frame: pd.DataFrame, params=None) -> pd.DataFrame:
        return self.task.predict(self.model, frame, dict(params or {}))


@pytest.mark.parametrize(("make", "columns"), [
    (_conll, ["tags"]),
    (_pairs, ["target", "score"]),
    (_text, ["nll", "tokens", "characters"]),
    (_series, ["forecast"]),
], ids=["tag", "seq2seq", "lm", "forecast"])
def test_every_task_predicts_a_batch_of_dataset_rows(tmp_path, make, columns):
    root, model_args = make(tmp_path)
    manifest = read_manifest(root)
    pre = Preprocessing.from_manifest(manifest)
    cfg = RecurConfig(data={"task": manifest.task}, model={"hidden_size": 8, **model_args})
    task = build_task(cfg, pre)
    torch.manual_seed(0)
    served = Served(task, task.build_model().eval())
    spec = InputSpec.from_manifest(manifest)
    test = read_split(root, "test").select(["id", "x", *manifest.columns])
    test = test.append_column("split", pa.array(["test"] * test.num_rows))

    expected = served.predict(spec.build_task().raw_inputs(test))
    schema = output_schema(expected.head(1))
    out = BatchPredictor(served, spec, {}, schema)(test)

    assert schema.names == columns
    assert out.column_names == ["id", "split", *columns, "error"]
    assert out.column("id").to_pylist() == test.column("id").to_pylist()
    assert out.column("error").null_count == test.num_rows
    for name in columns:
        got, want = out.column(name).to_pylist(), expected[name].tolist()
        if name in ("score", "nll", "forecast"):
            np.testing.assert_allclose(np.asarray(got, float), np.asarray(want, float), rtol=1e-5)
        else:
            assert got == [list(w) if isinstance(w, (list, np.ndarray)) else w for w in want], name
