"""`fit`: the budget, schedule and early stopping in plain PyTorch, no Ray."""

from __future__ import annotations

import pytest
import torch

from pipeline.config import LrScheduleConfig, ModelConfig, RecurConfig
from pipeline.data.preprocess import Preprocessing
from pipeline.models import build_model
from pipeline.tasks.classify import ClassifyTask
from pipeline.training.loop import (
    EpochStats,
    FitPlan,
    FitState,
    TrainingDiverged,
    evaluate_batches,
    fit,
    non_finite,
)
from pipeline.training.optimizer import make_optimizer


def _twenty_rows(batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """20 sequences (class = sign of channel 0's mean), in batches of `batch_size`: 3 steps."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 9, (20,), generator=g)
    x = torch.randn(20, int(lengths.max()), 2, generator=g)
    x = x * (torch.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]
    y = ((x[..., 0].sum(1) / lengths) > 0).long()
    return [{"x": x[i : i + batch_size], "lengths": lengths[i : i + batch_size], "y": y[i : i + batch_size]}
            for i in range(0, 20, batch_size)]


def _run(plan: FitPlan, *, val_metric=None, state=None, at_chance=None):
    torch.manual_seed(0)
    task = ClassifyTask(Preprocessing(mean=[0.0, 0.0], std=[1.0, 1.0], labels=["neg", "pos"]), RecurConfig())
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    optimizer = make_optimizer("adam", model.parameters(), lr=plan.lr)
    batches = _twenty_rows()
    reports: list[tuple[int, dict, bool]] = []

    def validate(m):
        if val_metric is not None:  # a metric that never improves after the first epoch
            chance = {} if at_chance is None else {"at_chance": at_chance(len(reports))}
            return {"val_loss": val_metric(len(reports)), **chance}
        state_ = evaluate_batches(m, batches, task)
        return {f"val_{k}": v for k, v in task.compute(state_).items()}

    final = fit(model, optimizer, task, plan, train_batches=lambda epoch: batches, validate=validate,
                report=lambda epoch, metrics, st, stop: reports.append((epoch, dict(metrics), stop)),
                state=state)
    return final, reports, optimizer


def test_fit_takes_at_least_min_steps_on_a_20_row_dataset_even_when_early_stopping_would_stop():
    # given 20 rows in 3 batches, 2 planned epochs, patience 1 and a val loss that never improves
    plan = FitPlan(epochs=2, lr=1e-2, schedule=LrScheduleConfig(), monitor="val_loss", monitor_mode="min",
                   patience=1, min_steps=30)
    # when fitting
    state, reports, _ = _run(plan, val_metric=lambda epoch: 1.0)
    # then it ran 10 epochs (30 steps), not the 2 planned nor the 2 early stopping allowed
    assert state.steps_done == 30
    assert [r[0] for r in reports] == list(range(10))
    assert reports[-1][1]["steps_done"] == 30
    assert [stop for *_, stop in reports] == [False] * 9 + [True]  # stops as soon as min_steps is met


def test_fit_stops_early_after_min_steps_and_never_before():
    plan = FitPlan(epochs=50, lr=1e-2, schedule=LrScheduleConfig(), monitor="val_loss", monitor_mode="min",
                   patience=2, min_steps=12)
    state, reports, _ = _run(plan, val_metric=lambda epoch: 1.0)
    # epoch 0 sets the best; epochs 1 and 2 do not improve: patience is met at 9 steps, min_steps at 12
    assert len(reports) == 4 and state.steps_done == 12 and reports[-1][2]


def test_epochs_at_chance_do_not_count_towards_patience():
    # given patience 2, a val loss that never improves after epoch 0, and validation at chance in
    # epochs 0-3 (a tagger that tags every word O at first)
    plan = FitPlan(epochs=20, lr=1e-2, schedule=LrScheduleConfig(), monitor="val_loss", monitor_mode="min",
                   patience=2)
    state, reports, _ = _run(plan, val_metric=lambda epoch: 1.0, at_chance=lambda epoch: epoch < 4)
    # then patience counts from epoch 4, the first off chance: it stops after epochs 4 and 5, not 1 and 2
    assert [r[0] for r in reports] == list(range(6)) and reports[-1][2]
    assert state.bad_epochs == 2
    # and a run that never leaves chance trains its planned epochs
    state, reports, _ = _run(plan, val_metric=lambda epoch: 1.0, at_chance=lambda epoch: True)
    assert len(reports) == 20 and not any(stop for *_, stop in reports) and state.bad_epochs == 0


def test_fit_follows_the_schedule_and_improves_the_model():
    plan = FitPlan(epochs=12, lr=1e-2, schedule=LrScheduleConfig(name="cosine", warmup_epochs=2),
                   monitor="val_loss", monitor_mode="min", patience=0, min_steps=0)
    state, reports, _ = _run(plan)
    lrs = [m["lr"] for _, m, _ in reports]
    assert lrs[0] < lrs[1] < lrs[2] and lrs[2] == max(lrs) and lrs[-1] < lrs[2] / 10  # warm-up, then decay
    assert reports[-1][1]["val_loss"] < reports[0][1]["val_loss"]
    assert state.best_epoch >= 0 and state.steps_done == 36


def _booked(**fields) -> FitState:
    """The state at the end of a 10-epoch cycle whose training loss fell from 1.0 to 0.2."""
    return FitState(**{"next_epoch": 10, "first_loss": 1.0, "cycle_loss": 0.2, "bad_epochs": 0, **fields})


def test_a_cycle_restarts_only_when_the_run_is_still_learning_and_short_of_fit():
    plan = FitPlan(epochs=10, lr=1e-2, schedule=LrScheduleConfig(name="cosine"), monitor="train_loss",
                   monitor_mode="min", patience=5, max_epochs=30)
    assert plan.restarts(_booked())
    assert not plan.restarts(_booked(cycle_loss=0.05))  # fit: at 1/20 of the first epoch's loss
    assert not plan.restarts(_booked(bad_epochs=5))  # no improvement in the last `patience` epochs
    assert not plan.restarts(_booked(next_epoch=9))  # not the cycle's end
    assert plan.restarts(_booked(next_epoch=20, cycle_start=10))  # the second cycle ends by 30
    assert not plan.restarts(_booked(next_epoch=30, cycle_start=20))  # a fourth would end at 40
    assert not FitPlan(**{**plan.__dict__, "max_epochs": None}).restarts(_booked())  # off by default
    # without early stopping, "still learning" is an improvement in the last tenth of the cycle
    no_patience = FitPlan(**{**plan.__dict__, "patience": 0})
    assert no_patience.restarts(_booked()) and not no_patience.restarts(_booked(bad_epochs=1))


def test_fit_is_measured_from_the_loss_floor():
    # given a loss that cannot fall below 0.5 (label smoothing's entropy), a first epoch at 1.5
    # and a cycle that ended at 0.54: 1/25 of the way from the floor, so fit (0.54 > 0.05 * 1.5
    # would restart it forever without the floor); at 0.6 (1/10 of the way) it is not yet
    plan = FitPlan(epochs=10, lr=1e-2, schedule=LrScheduleConfig(name="cosine"), monitor="train_loss",
                   monitor_mode="min", patience=5, max_epochs=30, loss_floor=0.5)
    assert not plan.restarts(_booked(first_loss=1.5, cycle_loss=0.54))
    assert plan.restarts(_booked(first_loss=1.5, cycle_loss=0.6))
    assert FitPlan(**{**plan.__dict__, "loss_floor": 0.0}).restarts(_booked(first_loss=1.5, cycle_loss=0.54))


def test_an_unfit_run_restarts_its_schedule_up_to_max_epochs():
    # given 3 planned epochs with warm-up and a cosine decay, restarts up to 9 epochs, and a learning
    # rate so small that the 20-row training loss is still falling, far from fit, when each cycle ends
    plan = FitPlan(epochs=3, lr=1e-4, schedule=LrScheduleConfig(name="cosine", warmup_epochs=1),
                   monitor="train_loss", monitor_mode="min", patience=2, max_epochs=9)
    state, reports, _ = _run(plan)
    # then it trained three cycles, each with the schedule from its start
    lrs = [m["lr"] for _, m, _ in reports]
    assert [r[0] for r in reports] == list(range(9)) and state.steps_done == 27
    assert lrs[:3] == lrs[3:6] == lrs[6:] and lrs[0] < lrs[1] and lrs[2] < lrs[1]
    assert [m["restarted"] for _, m, _ in reports] == [0, 0, 1, 0, 0, 1, 0, 0, 0]
    losses = [m["train_loss"] for _, m, _ in reports]
    assert losses[-1] < losses[0] and min(losses) > 0.05 * losses[0]
    assert state.cycle_start == 6 and state.first_loss == losses[0] and state.cycle_loss == min(losses[6:])
    assert state.ended_cycle_loss == min(losses[3:6])  # what the restart's log line names
    # a restarted cycle runs whole: a monitored metric that stops improving in it (here from epoch
    # 3 on, patience 2) does not end it early, and then the run is no longer learning: no third cycle
    flat = FitPlan(**{**plan.__dict__, "monitor": "val_loss"})
    _, reports, _ = _run(flat, val_metric=lambda epoch: 1.0 - 0.1 * min(epoch, 2))
    assert [r[0] for r in reports] == list(range(6)) and not any(stop for *_, stop in reports)
    assert [m["restarted"] for _, m, _ in reports] == [0, 0, 1, 0, 0, 0]
    # a run continued from a checkpoint inside the second cycle keeps that cycle's schedule
    resumed = FitState(next_epoch=4, cycle_start=3, first_loss=losses[0], cycle_loss=losses[3], steps_done=12)
    _, rest, _ = _run(plan, state=resumed)
    assert [r[0] for r in rest][:2] == [4, 5] and [m["lr"] for _, m, _ in rest][:2] == lrs[1:3]
    # and with a learning rate that fits the rows well within the cycle, nothing is added
    quick = FitPlan(**{**plan.__dict__, "lr": 3e-2, "epochs": 40, "max_epochs": 120, "patience": 0})
    _, reports, _ = _run(quick)
    assert min(m["train_loss"] for _, m, _ in reports) < 0.05 * reports[0][1]["train_loss"]
    assert len(reports) == 40 and not any(m["restarted"] for _, m, _ in reports)


def test_fit_continues_from_a_state():
    plan = FitPlan(epochs=4, lr=1e-2, schedule=LrScheduleConfig(), monitor="val_loss", monitor_mode="min")
    state, reports, _ = _run(plan, state=FitState(next_epoch=2, steps_done=6))
    assert [r[0] for r in reports] == [2, 3] and state.steps_done == 12


def test_fit_flags_validation_at_chance_after_consecutive_epochs():
    # a constant-prediction task: val accuracy equals the majority share every epoch
    plan = FitPlan(epochs=5, lr=1e-12, schedule=LrScheduleConfig(), monitor="val_loss", monitor_mode="min",
                   chance_epochs=3)
    torch.manual_seed(0)
    task = ClassifyTask(Preprocessing(mean=[0.0, 0.0], std=[1.0, 1.0], labels=["neg", "pos"]), RecurConfig())
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    with torch.no_grad():  # always predicts class 1
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 5.0]))
    batches = [{**b, "y": torch.ones_like(b["y"])} for b in _twenty_rows()]
    batches[0]["y"][:3] = 0  # 17 of 20 are class 1: the majority share is 0.85
    optimizer = make_optimizer("sgd", model.parameters(), lr=plan.lr)
    reports = []

    def validate(m):
        val_state = evaluate_batches(m, batches, task)
        return {**{f"val_{k}": v for k, v in task.compute(val_state).items()},
                "at_chance": bool(task.at_chance(val_state))}

    fit(model, optimizer, task, plan, train_batches=lambda e: batches, validate=validate,
        report=lambda e, metrics, st, stop: reports.append(metrics))
    assert [r["at_chance"] for r in reports] == [0, 0, 1, 1, 1]
    assert all(abs(r["val_accuracy"] - 0.85) < 1e-9 for r in reports)
    assert "most frequent class (0.8500)" in task.at_chance(evaluate_batches(model, batches, task))


def test_fit_stops_on_nan_naming_the_epoch_and_what_to_change():
    # given a plan whose third epoch meets a batch holding inf (the gradients become NaN)
    plan = FitPlan(epochs=6, lr=1e-2, schedule=LrScheduleConfig(), monitor="val_loss", monitor_mode="min")
    torch.manual_seed(0)
    task = ClassifyTask(Preprocessing(mean=[0.0, 0.0], std=[1.0, 1.0], labels=["neg", "pos"]), RecurConfig())
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    optimizer = make_optimizer("adam", model.parameters(), lr=plan.lr)
    good = _twenty_rows()
    bad = [{**b, "x": b["x"].clone()} for b in good]
    bad[1]["x"][0, 0, 0] = float("inf")
    reports = []

    def validate(m):
        return {f"val_{k}": v for k, v in task.compute(evaluate_batches(m, good, task)).items()}

    # when fitting
    with pytest.raises(TrainingDiverged) as caught:
        fit(model, optimizer, task, plan, train_batches=lambda epoch: bad if epoch == 2 else good,
            validate=validate, report=lambda e, metrics, st, stop: reports.append((e, metrics, stop)),
            grad_clip=1.0)
    # then the run stops in that epoch, says so in its last report (no further epoch), and the
    # message names the epoch, what was not finite and the keys to change
    message = str(caught.value)
    assert caught.value.epoch == 2 and "training diverged in epoch 3" in message
    assert "train_loss is" in message or "gradients were NaN or inf" in message
    assert "train.lr (now 0.01)" in message and "train.grad_clip (now 1)" in message
    assert [e for e, *_ in reports] == [0, 1, 2]
    assert reports[-1][1]["diverged"] and reports[-1][2] is True
    assert "diverged" not in reports[1][1]


def test_non_finite_weights_are_found_even_when_the_loss_is_finite():
    model = build_model(ModelConfig(cell="gru", hidden_size=8), input_size=2, num_classes=2)
    stats = EpochStats(loss=0.5, num_units=20, num_sequences=20, num_steps=3, grad_norm=1.0,
                       grad_norm_max=1.0, seconds=1.0)
    assert non_finite(model, {"train_loss": 0.5, "val_loss": 0.4}, stats, monitor="val_loss") is None
    assert non_finite(model, {"train_loss": 0.5, "val_loss": float("nan")}, stats,
                      monitor="val_loss") == "val_loss is nan"
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    assert non_finite(model, {"train_loss": 0.5, "val_loss": 0.4}, stats,
                      monitor="val_loss") == "weights hold NaN or inf (head.bias)"
