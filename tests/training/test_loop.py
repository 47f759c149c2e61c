"""The plain-PyTorch loop on tensors, no Ray: loss goes down, clipping, metrics."""

import math

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig, RecurConfig
from pipeline.data.preprocess import Preprocessing
from pipeline.models import build_model
from pipeline.tasks.classify import ClassifyTask, classification_scores
from pipeline.training.loop import evaluate_batches, train_epoch
from pipeline.training.optimizer import make_optimizer


def _task(label_smoothing=0.0):
    pre = Preprocessing(mean=[0.0, 0.0], std=[1.0, 1.0], labels=["neg", "pos"])
    return ClassifyTask(pre, RecurConfig(train={"label_smoothing": label_smoothing}))


def _toy_batches(seed=0, num_batches=8, batch=16):
    """Class = sign of the mean of channel 0; lengths vary from 3 to 10."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num_batches):
        lengths = torch.randint(3, 11, (batch,), generator=g)
        x = torch.randn(batch, int(lengths.max()), 2, generator=g)
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        x = x * mask[..., None]
        y = ((x[..., 0].sum(1) / lengths) > 0).long()
        batches.append({"x": x, "lengths": lengths, "y": y})
    return batches


def test_train_epoch_reduces_loss_and_reports_stats():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=16), input_size=2, num_classes=2)
    opt = make_optimizer("adam", model.parameters(), lr=1e-2)
    batches = _toy_batches()
    task = _task()
    first = train_epoch(model, batches, opt, task, grad_clip=1.0)
    for _ in range(10):
        last = train_epoch(model, batches, opt, task, grad_clip=1.0)
    assert last.loss < first.loss * 0.7
    assert first.num_sequences == 128 and first.num_steps == 8
    assert first.grad_norm > 0 and math.isfinite(first.grad_norm)
    state = evaluate_batches(model, batches, task)
    assert task.compute(state)["accuracy"] > 0.8


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "sgd"])
def test_every_optimizer_steps(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="lstm", hidden_size=8), input_size=2, num_classes=2)
    before = [p.detach().clone() for p in model.parameters()]
    opt = make_optimizer(name, model.parameters(), lr=1e-2)
    train_epoch(model, _toy_batches(num_batches=2), opt, _task())
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_unknown_optimizer_names_the_key():
    with pytest.raises(ValueError, match="train.optimizer"):
        make_optimizer("lbfgs", [], lr=1.0)


def test_gradient_clipping_bounds_the_update():
    # given a huge learning signal, when clipping at 0.01, then the norm is reported pre-clip
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="rnn", hidden_size=8), input_size=2, num_classes=2)
    opt = make_optimizer("sgd", model.parameters(), lr=1.0, momentum=0.0)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    stats = train_epoch(model, _toy_batches(num_batches=1), opt, _task(), grad_clip=0.01)
    after = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    assert stats.grad_norm > 0.01
    assert (after - before).norm() <= 0.01 + 1e-6


def test_metrics_macro_f1_matches_definition():
    confusion = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    scores = classification_scores(confusion)
    f1_a = 2 * 5 / (6 + 7)
    f1_b = 2 * 3 / (5 + 4)
    assert scores["accuracy"] == pytest.approx(8 / 11)
    assert scores["macro_f1"] == pytest.approx((f1_a + f1_b) / 2)  # class 2 absent everywhere


def test_gradient_clipping_by_value_clamps_each_element():
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    opt = make_optimizer("sgd", model.parameters(), lr=1.0, momentum=0.0)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    train_epoch(model, _toy_batches(num_batches=1), opt, _task(), grad_clip=1e-3,
                grad_clip_mode="value")
    after = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    assert (after - before).abs().max() <= 1e-3 + 1e-7


def test_label_smoothing_raises_the_loss_of_confident_predictions():
    logits = torch.tensor([[10.0, -10.0]])
    batch = {"y": torch.tensor([0])}
    smoothed = _task(label_smoothing=0.2).loss(logits, batch)
    assert smoothed > _task().loss(logits, batch) + 1.0


@pytest.mark.parametrize("smoothing", [0.1, 0.3])
def test_loss_floor_is_the_least_the_smoothed_loss_can_be(smoothing):
    # given the smoothed target q of 2 classes, logits log q score exactly the floor, and any
    # other logits (sharper, flatter, wrong) score more
    task = _task(label_smoothing=smoothing)
    q = torch.tensor([1 - smoothing / 2, smoothing / 2])
    batch = {"y": torch.tensor([0])}
    assert task.loss(q.log().unsqueeze(0), batch).item() == pytest.approx(task.loss_floor, abs=1e-6)
    for logits in ([10.0, -10.0], [0.0, 0.0], [-1.0, 1.0], [6.0, 0.0]):
        assert task.loss(torch.tensor([logits]), batch).item() > task.loss_floor + 1e-4
    assert _task().loss_floor == 0.0  # plain cross-entropy nears 0


@pytest.mark.parametrize("name,expected", [
    # warm-up over 2 epochs: lr/3, 2lr/3, then the schedule from its own epoch 0
    ("none", [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 1.0]),
    ("step", [1 / 3, 2 / 3, 1.0, 1.0, 0.5, 0.5]),  # step_size 2, gamma 0.5
    ("cosine", [1 / 3, 2 / 3, 1.0, 0.75, 0.25, 0.0]),  # 4 epochs after warm-up, min_lr 0
])
def test_learning_rate_schedules(name, expected):
    from pipeline.config import LrScheduleConfig
    from pipeline.training.optimizer import learning_rate

    schedule = LrScheduleConfig(name=name, warmup_epochs=2, step_size=2, gamma=0.5)
    got = [learning_rate(1.0, e, total_epochs=6, schedule=schedule) for e in range(6)]
    assert got == pytest.approx(expected)


def test_plateau_schedule_decays_per_plateau_and_stops_at_min_lr():
    from pipeline.config import LrScheduleConfig
    from pipeline.training.optimizer import learning_rate

    schedule = LrScheduleConfig(name="plateau", gamma=0.1, min_lr=0.005)
    assert learning_rate(1.0, 7, total_epochs=10, schedule=schedule, plateau_decays=0) == 1.0
    assert learning_rate(1.0, 7, total_epochs=10, schedule=schedule, plateau_decays=1) == pytest.approx(0.1)
    assert learning_rate(1.0, 7, total_epochs=10, schedule=schedule, plateau_decays=5) == 0.005


def test_precision_resolves_per_device():
    from pipeline.training.loop import Precision

    assert Precision.resolve("auto", "cpu").amp_dtype is None
    assert Precision.resolve("auto", "cuda") == Precision("fp16", torch.float16)
    assert Precision.resolve("bf16", "cuda").scaler("cuda") is None  # bf16 needs no loss scaling
    assert isinstance(Precision.resolve("fp16", "cuda").scaler("cpu"), torch.amp.GradScaler)
    for name in ("fp16", "bf16"):  # oneDNN's LSTM has no such kernels on most CPUs
        with pytest.raises(ValueError, match=f"train.precision={name} needs a GPU"):
            Precision.resolve(name, "cpu")


def test_a_step_with_overflowed_gradients_is_left_out_of_the_norm_statistics():
    # given a batch whose loss is inf (as fp16 overflow gives), when the epoch trains, then the
    # reported norm statistics come from the finite steps only
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    opt = make_optimizer("sgd", model.parameters(), lr=0.0, momentum=0.0)  # lr 0: weights stay
    good = _toy_batches(num_batches=1)[0]
    bad = {**good, "x": good["x"].clone()}
    bad["x"][0, 0, 0] = float("inf")
    reference = train_epoch(model, [good], opt, _task())
    stats = train_epoch(model, [good, bad, good], opt, _task())
    assert stats.num_steps == 3
    assert stats.grad_norm == pytest.approx(reference.grad_norm)
    assert stats.grad_norm_max == pytest.approx(reference.grad_norm)


def test_train_epoch_counts_the_time_spent_waiting_for_batches():
    # given batches that each take at least 50 ms to arrive (a slow data pipeline)
    import time

    def slow(batches):
        for batch in batches:
            time.sleep(0.05)
            yield batch

    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    optimizer = make_optimizer("adam", model.parameters(), lr=1e-2)
    # when an epoch trains on them
    stats = train_epoch(model, slow(_toy_batches()), optimizer, _task())
    # then at least the 8 x 50 ms of sleeping is counted as waiting, and waiting is part of the epoch
    assert stats.num_steps == 8
    assert 0.4 <= stats.data_wait_seconds < stats.seconds


def test_train_epoch_shows_rank_0_progress_when_due():
    from types import SimpleNamespace

    from pipeline.training.step_board import StepPublisher

    torch.manual_seed(0)
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    opt = make_optimizer("adam", model.parameters(), lr=1e-2)
    sent = []
    board = SimpleNamespace(step=SimpleNamespace(remote=sent.append))
    every_step = StepPublisher(board, interval_s=0.0)
    every_step.start_epoch(2, 8)
    stats = train_epoch(model, _toy_batches(), opt, _task(), publisher=every_step)
    assert [u["step"] for u in sent] == list(range(1, 9)) and {u["epoch"] for u in sent} == {2}
    assert sent[-1]["loss"] == pytest.approx(stats.loss)  # the running mean ends at the epoch's loss
    sent.clear()
    once = StepPublisher(board, interval_s=3600.0)  # at most once an hour: the first step only
    train_epoch(model, _toy_batches(), opt, _task(), publisher=once)
    assert [u["step"] for u in sent] == [1]
