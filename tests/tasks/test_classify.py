"""The classify task's per-class scores and its per-class F1 picture.

Given a hand-written test confusion matrix, when the task computes its scores and its report, then
each class's F1 and support match hand-computed values and the picture draws exactly those.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from pipeline.config import RecurConfig
from pipeline.data.preprocess import Preprocessing
from pipeline.tasks.classify import ClassifyTask, classification_scores, per_class_f1
from pipeline.tracking import plots

LABELS = ["neg", "pos", "rare"]
# rows: true, columns: predicted; "rare" is neither true nor predicted on this test split
CONFUSION = np.array([[5, 1, 0],
                      [2, 3, 0],
                      [0, 0, 0]])
# neg: tp 5, 6 true, 7 predicted -> 10/13; pos: tp 3, 5 true, 4 predicted -> 6/9
F1 = [10 / 13, 6 / 9]


def test_per_class_f1_and_support_from_the_confusion_matrix():
    f1, support = per_class_f1(CONFUSION)
    assert f1[:2] == pytest.approx(F1) and math.isnan(f1[2])
    assert support.tolist() == [6, 5, 0]
    # the macro mean leaves out the class never seen, as before
    assert classification_scores(CONFUSION)["macro_f1"] == pytest.approx(sum(F1) / 2)
    assert classification_scores(CONFUSION)["accuracy"] == pytest.approx(8 / 11)


def test_report_draws_one_bar_per_class_at_its_f1_with_its_support():
    pre = Preprocessing(mean=[0.0], std=[1.0], labels=LABELS)
    task = ClassifyTask(pre, RecurConfig(model={"cell": "gru", "hidden_size": 4}))
    state = task.new_state()
    state["confusion"] += torch.from_numpy(CONFUSION)
    table = pa.table({"id": pa.array([], pa.string())})  # read only for attention pooling

    report = task.report(task.build_model(), table, state)

    fig = report.figures["plots/per_class_f1.png"]
    try:
        (ax,) = fig.axes
        assert [bar.get_width() for bar in ax.patches] == pytest.approx([*F1, 0.0])  # no F1: no bar
        assert [t.get_text() for t in ax.get_yticklabels()] == LABELS  # label order, first on top
        assert ax.yaxis_inverted()
        assert [t.get_text() for t in ax.texts] == ["n=6", "n=5", "n=0"]
        assert ax.get_title() == f"test F1 per class (macro F1 {sum(F1) / 2:.3f})"
        assert ax.get_xlabel() == "F1"
    finally:
        for figure in report.figures.values():
            plots.close(figure)


def test_f1_bars_refuse_mismatched_inputs():
    with pytest.raises(ValueError, match="one F1 and support per name"):
        plots.f1_bars(["a", "b"], [0.5], [1, 2])
