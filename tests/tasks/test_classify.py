"""The classify task's per-class scores and its per-class F1 picture.

Given a hand-written test confusion matrix, when the task computes its scores and its report, then
each class's F1 and support match hand-computed values and the picture draws exactly those.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from pipeline.config import RecurConfig
from pipeline.data.preprocess import Preprocessing
from pipeline.tasks import plots
from pipeline.tasks.classify import (
    ClassifyTask,
    classification_scores,
    nn1_accuracy,
    per_class_f1,
    random_crop,
    resample,
)
from pipeline.tracking.plots import close

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
            close(figure)


def test_f1_bars_refuse_mismatched_inputs():
    with pytest.raises(ValueError, match="one F1 and support per name"):
        plots.f1_bars(["a", "b"], [0.5], [1, 2])


# ------------------------------------------------------------------------------------ baseline


def _classify_table(xs: list[list[float]], ys: list[int]) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(ys))],
                     "x": pa.array(xs, pa.list_(pa.float32())), "y": pa.array(ys, pa.int64())})


def test_baseline_is_the_train_majority_class_scored_like_the_gate_with_a_1nn_reference():
    # Given train labels a, b, b, c (majority b) and test labels b, a, c, b
    train = _classify_table([[0.0, 0.0], [10.0, 10.0, 10.0], [5.0], [0.0, 10.0]], [0, 1, 1, 2])
    test = _classify_table([[9.0, 9.0], [1.0, 1.0, 1.0], [0.0, 5.0, 10.0], [6.0]], [1, 0, 2, 1])
    task = ClassifyTask(Preprocessing(mean=[0.0], std=[1.0], labels=["a", "b", "c"]))

    scores = task.baseline(train, test)

    # then "b" for every row: 2 of 4 right; F1 a 0, b 2*2/(2 true + 4 predicted), c 0
    assert scores["accuracy"] == 0.5
    assert scores["macro_f1"] == pytest.approx((0 + 4 / 6 + 0) / 3)
    assert scores == {**task.score(pd.DataFrame({"label": ["b"] * 4}), task.gate_data(test)[1]),
                      "nn1_euclidean_accuracy": scores["nn1_euclidean_accuracy"]}
    # and 1-NN on sequences resampled to 3 steps gets all four: [0, 5, 10] is [0, 10] resampled
    # (distance 0, class c), [6] repeated is nearest to [5] repeated (class b)
    assert scores["nn1_euclidean_accuracy"] == 1.0
    assert "nn1_euclidean_accuracy" not in task.gate_metrics


def test_resample_interpolates_every_channel_linearly_and_keeps_full_length_rows():
    out = resample([np.array([[0.0, 1.0], [4.0, 1.0]]), np.array([[2.0, 3.0]]),
                    np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])], 3)
    assert out[0].tolist() == [[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]]
    assert out[1].tolist() == [[2.0, 3.0]] * 3
    assert out[2].tolist() == [[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]


def test_1nn_compares_a_seeded_subsample_of_a_split_larger_than_max_rows():
    # Given 9 test rows, 5 next to their class and 4 next to the other one
    train = _classify_table([[0.0], [10.0]], [0, 1])
    test = _classify_table([[1.0]] * 5 + [[9.0]] * 4, [0] * 9)
    assert nn1_accuracy(train, test) == pytest.approx(5 / 9)
    # when at most 4 rows are compared, then the accuracy is over 4 rows, the same every time
    capped = nn1_accuracy(train, test, max_rows=4)
    assert (capped * 4).is_integer() and capped == nn1_accuracy(train, test, max_rows=4)


def _rows(lengths: list[int], steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded rows (B, steps, 2): row i holds 100 * i + t at step t in channel 0 and its negative in
    channel 1, zeros after its length."""
    x = torch.zeros(len(lengths), steps, 2)
    for i, length in enumerate(lengths):
        values = 100.0 * i + torch.arange(1, length + 1, dtype=torch.float32)
        x[i, :length, 0], x[i, :length, 1] = values, -values
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("share", [0.5, 0.8, 0.99])
def test_random_crop_cuts_each_row_to_a_window_of_itself_moved_to_the_front(share):
    lengths = [40, 17, 3, 1, 40]
    x, lengths_B = _rows(lengths, 40)
    generator = torch.Generator().manual_seed(0)
    seen_lengths, seen_starts = set(), set()
    for _ in range(50):
        cropped, kept = random_crop(x, lengths_B, share, generator)
        assert cropped.shape == x.shape and kept.dtype == lengths_B.dtype
        for i, (length, keep) in enumerate(zip(lengths, kept.tolist())):
            assert max(math.ceil(share * length), 1) <= keep <= length
            start = int(cropped[i, 0, 0]) - 100 * i - 1  # where in the row the window began
            assert 0 <= start <= length - keep
            expected = x[i, start:start + keep]  # contiguous steps of the row, both channels
            assert torch.equal(cropped[i, :keep], expected)
            assert not cropped[i, keep:].any()  # after the window: zeros, as padding is
            seen_lengths.add((i, keep))
            seen_starts.add((i, start))
    # the windows of the 40-step row vary, lengths and starts both (21 lengths at share 0.5), except
    # at 0.99, where ceil(0.99 * 40) is the whole row
    varied = {k for i, k in seen_lengths if i == 0}, {s for i, s in seen_starts if i == 0}
    assert [len(v) > 1 for v in varied] == [share < 0.99] * 2
    assert random_crop(x, lengths_B.int(), share, generator)[1].dtype == torch.int32
    # the same generator state gives the same windows
    again = random_crop(x, lengths_B, share, torch.Generator().manual_seed(0))
    first = random_crop(x, lengths_B, share, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


class _Recorder(torch.nn.Module):
    """A stand-in model that keeps what it was called with and returns zero logits."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.calls.append((x, lengths))
        return torch.zeros(x.shape[0], 2)


def test_training_forward_crops_the_rows_and_evaluation_reads_them_whole():
    pre = Preprocessing(mean=[0.0, 0.0], std=[1.0, 1.0], labels=["a", "b"])
    x, lengths = _rows([30, 12], 30)
    batch = {"x": x, "lengths": lengths}
    task = ClassifyTask(pre, RecurConfig(train={"random_crop": 0.5}))
    model = _Recorder()
    task.forward(model, batch, train=False)
    assert model.calls[-1][0] is x and model.calls[-1][1] is lengths  # whole rows, untouched
    torch.manual_seed(1)
    task.forward(model, batch, train=True)
    cropped, kept = model.calls[-1]  # windows of 50-100% of each row: 15-30 and 6-12 steps
    assert 15 <= kept[0] <= 30 and 6 <= kept[1] <= 12 and kept.tolist() != [30, 12]
    assert not cropped[0, int(kept[0]):].any() and not cropped[1, int(kept[1]):].any()
    off = ClassifyTask(pre, RecurConfig())  # 0, the default: training reads whole rows too
    off.forward(model, batch, train=True)
    assert model.calls[-1][0] is x
    # auto is for the budget to decide; a task left with it cannot train (but can evaluate)
    unresolved = ClassifyTask(pre, RecurConfig(train={"random_crop": "auto"}))
    unresolved.forward(model, batch, train=False)
    with pytest.raises(ValueError, match="train.random_crop 'auto' must be resolved from the dataset"):
        unresolved.forward(model, batch, train=True)
    tokens = Preprocessing(mean=[0.0], std=[1.0], labels=["a", "b"], feature_kind="token",
                           vocab=["<pad>", "x"])
    with pytest.raises(ValueError, match="train.random_crop 0.5 cuts float sequences .* inputs are tokens"):
        ClassifyTask(tokens, RecurConfig(train={"random_crop": 0.5}))
