"""The budget and the "auto" settings, resolved from a real dataset's manifest."""

from __future__ import annotations

import pytest
from conftest import make_toy_dataset

from pipeline.config import ConfigError, RecurConfig
from pipeline.data.dataset import read_manifest
from pipeline.training.budget import auto_batch_size, budget_params, resolve


@pytest.mark.parametrize(("rows", "expected"), [
    (1, 1), (3, 3), (11, 4), (63, 4), (64, 4), (108, 8), (128, 8), (300, 16), (512, 32), (40_000, 32),
])
def test_auto_batch_size_gives_every_worker_enough_steps(rows, expected):
    assert auto_batch_size(rows) == expected


def _manifest(tmp_path, n_train):
    return read_manifest(str(make_toy_dataset(tmp_path / "d", n_train=n_train, n_val=8, n_test=8)))


def test_resolve_decides_batch_size_and_raises_epochs_to_reach_min_steps(tmp_path):
    # given 40 train rows on 2 workers: 20 each, batch auto -> 4, 5 steps per epoch
    manifest = _manifest(tmp_path, 40)
    cfg = RecurConfig(data={"batch_size": "auto"}, train={"epochs": 10, "min_steps": 300})
    resolved = resolve(cfg, manifest)
    assert resolved.cfg.data.batch_size == 4
    assert resolved.steps_per_epoch == 5
    assert resolved.cfg.train.epochs == 60  # 300 steps / 5 per epoch
    assert resolved.decisions == {"data.batch_size": 4, "train.epochs": 60}
    assert resolved.cfg.model.instance_norm is False  # auto: off outside forecasting, not worth a line
    assert budget_params(resolved)["budget.max_steps"] == 300
    # and resolving again changes nothing
    assert resolve(resolved.cfg, manifest).cfg == resolved.cfg


def test_max_epochs_bounds_the_restarts_and_the_logged_budget(tmp_path):
    # given 5 steps an epoch (as above), 10 planned epochs and restarts up to 40
    manifest = _manifest(tmp_path, 40)
    cfg = RecurConfig(data={"batch_size": "auto"}, train={"epochs": 10, "max_epochs": 40})
    resolved = resolve(cfg, manifest)
    assert resolved.cfg.train.max_epochs == 40
    assert budget_params(resolved)["budget.max_steps"] == 200  # 40 epochs of 5 steps
    # when min_steps raises the planned epochs past max_epochs, there is no room for a restart
    raised = resolve(cfg.model_copy(update={"train": cfg.train.model_copy(update={"min_steps": 300})}),
                     manifest).cfg.train
    assert (raised.epochs, raised.max_epochs) == (60, 60)
    # and a max_epochs below train.epochs is refused, naming both
    with pytest.raises(ValueError, match=r"train.max_epochs \(5\) must be at least train.epochs \(10\)"):
        RecurConfig(train={"epochs": 10, "max_epochs": 5})


def test_resolve_keeps_explicit_values_and_enough_epochs(tmp_path):
    manifest = _manifest(tmp_path, 40)
    cfg = RecurConfig(data={"batch_size": 16, "bucket_by_length": True},
                      train={"epochs": 200, "min_steps": 100},
                      model={"instance_norm": False, "raw_view": False})
    resolved = resolve(cfg, manifest)
    assert resolved.cfg == cfg and resolved.decisions == {}


def _tokens(manifest):
    """The same manifest, as if its inputs were token ids (texts)."""
    return manifest.model_copy(update={"feature": manifest.feature.model_copy(update={"kind": "token"})})


def test_resolve_picks_a_resnet_front_end_for_float_inputs_and_patches_long_sequences(tmp_path):
    from pipeline.config import RecurConfig as Cfg

    manifest = _manifest(tmp_path, 16)  # lengths 4..14: short, float inputs
    auto = Cfg(model={"frontend": "auto", "patch": "auto"})
    short = resolve(auto, manifest).cfg.model
    assert (short.frontend, short.patch) == ("resnet", 1)  # at any length; no patching
    tokens = resolve(auto, _tokens(manifest)).cfg.model
    assert (tokens.frontend, tokens.patch) == ("none", 1)  # an embedding reads token ids
    long = manifest.model_copy(update={"lengths": {
        "train": manifest.lengths["train"].model_copy(update={"mean": 1000.0, "max": 1200})}})
    resolved = resolve(Cfg(model={"frontend": "auto", "patch": "auto"}), long)
    assert (resolved.cfg.model.frontend, resolved.cfg.model.patch) == ("resnet", 8)  # ceil(1000 / 128)
    # and the front-end's batch norms train on random batches, not length-sorted ones
    assert resolved.cfg.data.bucket_by_length is False
    assert resolved.decisions["data.bucket_by_length"] is False
    assert resolve(Cfg(), long).cfg.data.bucket_by_length is True


def test_a_forecast_config_turns_instance_norm_on_and_no_front_end(tmp_path):
    manifest = _manifest(tmp_path, 16)
    forecast = manifest.model_copy(update={"task": "forecast"})
    cfg = RecurConfig(data={"task": "forecast"}, model={"frontend": "auto", "patch": "auto"},
                      registry={"metric": "mase"}, train={"monitor": "val_loss"})
    model = resolve(cfg, forecast).cfg.model
    # the manifest says nothing about the level's drift: on
    assert (model.instance_norm, model.frontend, model.patch) == (True, "none", 1)


@pytest.mark.parametrize("drift,on", [([1.56], True), ([0.12], False), ([0.08, 0.5], True),
                                      ([0.49, 0.2], False)])
def test_forecast_normalizes_each_window_when_the_train_level_drifts(tmp_path, drift, on):
    # given a forecast series whose train segment's halves differ by `drift` std (per column)
    manifest = _manifest(tmp_path, 16)
    forecast = manifest.model_copy(update={"task": "forecast", "task_params": {"level_drift": drift}})
    cfg = RecurConfig(data={"task": "forecast"}, registry={"metric": "mase"}, train={"monitor": "val_loss"})
    # then model.instance_norm auto is on from half a std in some column, and the decision is said
    resolved = resolve(cfg, forecast)
    assert resolved.cfg.model.instance_norm is on and resolved.decisions["model.instance_norm"] is on
    # and an explicit value is kept whatever the drift
    explicit = cfg.model_copy(update={"model": cfg.model.model_copy(update={"instance_norm": not on})})
    assert resolve(explicit, forecast).cfg.model.instance_norm is (not on)


def test_level_drift_is_zero_for_a_cycle_and_large_for_a_trend():
    import numpy as np

    from pipeline.data.importers.csv import level_drift

    t = np.arange(120, dtype=np.float64)
    cycle, trend = np.sin(2 * np.pi * t / 12), t / 10 + np.sin(2 * np.pi * t / 12)
    gappy = trend.copy()
    gappy[[3, 70]] = np.nan  # blank cells left out, not a NaN result
    drift = level_drift(np.stack([cycle, trend, gappy, np.ones(120)], axis=1))
    assert drift[0] < 0.05 and drift[1] > 1.5 and abs(drift[2] - drift[1]) < 0.1 and drift[3] == 0.0


def test_classify_normalizes_each_row_when_the_rows_own_scales_are_far_apart(tmp_path):
    manifest = _manifest(tmp_path, 16)
    # the toy rows share one scale: one global scaling serves them
    assert resolve(RecurConfig(), manifest).cfg.model.instance_norm is False
    spread = manifest.model_copy(update={"normalization": manifest.normalization.model_copy(
        update={"row_std_p10": [0.01, 1.0, 1.0], "row_std_p90": [5.0, 1.0, 1.0]})})
    resolved = resolve(RecurConfig(), spread)
    assert resolved.cfg.model.instance_norm is True and resolved.decisions["model.instance_norm"] is True
    # a manifest written before the row scales were kept says nothing: off
    old = manifest.model_copy(update={"normalization": manifest.normalization.model_copy(
        update={"row_std_p10": None, "row_std_p90": None})})
    assert resolve(RecurConfig(), old).cfg.model.instance_norm is False


def test_classify_gives_row_normalized_models_the_raw_view_and_says_so(tmp_path):
    manifest = _manifest(tmp_path, 16)
    spread = manifest.model_copy(update={"normalization": manifest.normalization.model_copy(
        update={"row_std_p10": [0.01, 1.0, 1.0], "row_std_p90": [5.0, 1.0, 1.0]})})
    # auto: on exactly where instance_norm is, and said
    resolved = resolve(RecurConfig(), spread)
    assert resolved.cfg.model.raw_view is True and resolved.decisions["model.raw_view"] is True
    shared = resolve(RecurConfig(), manifest)
    assert shared.cfg.model.raw_view is False and "model.raw_view" not in shared.decisions
    no_norm = RecurConfig(model={"instance_norm": False})
    assert resolve(no_norm, spread).cfg.model.raw_view is False
    # explicit values stand; true on a manifest without the rows' scale says what to do
    assert resolve(RecurConfig(model={"raw_view": False}), spread).cfg.model.raw_view is False
    old = manifest.model_copy(update={"normalization": manifest.normalization.model_copy(
        update={"row_std_p10": None, "row_std_p90": None})})
    assert resolve(RecurConfig(), old).cfg.model.raw_view is False
    with pytest.raises(ConfigError, match="model.raw_view.*import it again"):
        resolve(RecurConfig(model={"raw_view": True}), old)
    # and it is a classification setting
    with pytest.raises(ValueError, match="model.raw_view applies to classify"):
        RecurConfig(data={"task": "forecast"}, model={"raw_view": True})


def test_a_small_val_split_is_trained_on_and_train_loss_monitored(tmp_path):
    # 40 train + 8 val rows: 8 rows of val are too few to pick a checkpoint by
    manifest = _manifest(tmp_path, 40)
    cfg = RecurConfig(data={"batch_size": "auto"},
                      train={"epochs": 10, "min_steps": 300, "train_on_val": "auto"})
    resolved = resolve(cfg, manifest)
    train = resolved.cfg.train
    assert (train.train_on_val, train.monitor, train.monitor_mode) == (True, "train_loss", "min")
    # the budget counts the 48 rows: 24 a worker, batch auto -> 4 (24 / 16 rounds to 2, at least 4), 6 steps
    assert resolved.steps_per_epoch == 6 and train.epochs == 50
    assert resolved.decisions["train.train_on_val"] is True
    assert resolved.decisions["train.monitor"] == "train_loss"
    assert resolve(resolved.cfg, manifest).cfg == resolved.cfg

    # a val split of 200 rows or more keeps selecting the checkpoint
    big_val = manifest.model_copy(update={"splits": {
        **manifest.splits, "val": manifest.splits["val"].model_copy(update={"rows": 200})}})
    kept = resolve(cfg, big_val)
    assert (kept.cfg.train.train_on_val, kept.cfg.train.monitor) == (False, "val_loss")
    assert "train.train_on_val" not in kept.decisions and kept.steps_per_epoch == 5


def test_train_on_val_is_for_classify_under_auto_and_refused_for_lm(tmp_path):
    from pipeline.config import ConfigError, validate_config

    manifest = _manifest(tmp_path, 40)
    tagged = resolve(RecurConfig(data={"task": "tag"}, train={"train_on_val": "auto"}), manifest)
    assert tagged.cfg.train.train_on_val is False and tagged.cfg.train.monitor == "val_loss"
    # explicit, any task with rows: the user's val metric gives way to train_loss
    explicit = resolve(RecurConfig(data={"task": "tag"}, train={"train_on_val": True,
                                                               "monitor": "val_f1",
                                                               "monitor_mode": "max"}), manifest)
    assert (explicit.cfg.train.monitor, explicit.cfg.train.monitor_mode) == ("train_loss", "min")
    with pytest.raises(ConfigError, match="train.train_on_val applies to tasks whose splits hold rows"):
        validate_config({"data": {"task": "lm"}, "train": {"train_on_val": True}})


@pytest.mark.parametrize("config", [
    {"data": {"task": "tag"}, "model": {"branch_dropout": 0.5}},
    {"data": {"task": "classify"}, "model": {"frontend": "none", "branch_dropout": 0.5}},
])
def test_branch_dropout_is_refused_where_there_is_no_conv_summary_to_keep(config):
    from pipeline.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match="model.branch_dropout drops the recurrent state beside a conv"):
        validate_config(config)
    # 0 (the default) drops nothing anywhere; with a conv front-end, explicit or auto, it is taken
    validate_config({**config, "model": {**config["model"], "branch_dropout": 0.0}})
    validate_config({"model": {"frontend": "auto", "branch_dropout": 0.8}})
    validate_config({"model": {"frontend": "resnet", "branch_dropout": 0.8}})


def test_branch_dropout_under_an_auto_front_end_that_chose_none_is_refused_before_training(tmp_path):
    from pipeline.config import ConfigError

    manifest = _tokens(_manifest(tmp_path, 16))  # token inputs: frontend auto chooses none
    with pytest.raises(ConfigError, match=r"model.branch_dropout 0.8 needs a conv front-end, and "
                                         r"model.frontend auto chose none here \(token inputs"):
        resolve(RecurConfig(model={"frontend": "auto", "branch_dropout": 0.8}), manifest)


def test_branch_dropout_auto_follows_the_front_end_it_resolves_to(tmp_path):
    from pipeline.config import ConfigError, validate_config

    manifest = _manifest(tmp_path, 16)
    auto = {"frontend": "auto", "branch_dropout": "auto"}
    tokens = resolve(RecurConfig(model=auto), _tokens(manifest))  # frontend auto chooses none
    assert tokens.cfg.model.branch_dropout == 0.0 and "model.branch_dropout" not in tokens.decisions
    long = manifest.model_copy(update={"lengths": {
        "train": manifest.lengths["train"].model_copy(update={"mean": 300.0, "max": 300})}})
    resolved = resolve(RecurConfig(model=auto), long)
    assert resolved.cfg.model.frontend == "resnet" and resolved.cfg.model.branch_dropout == 0.8
    assert resolved.decisions["model.branch_dropout"] == 0.8
    forecast = resolve(RecurConfig(data={"task": "forecast"}, model=auto), long).cfg.model
    assert (forecast.frontend, forecast.branch_dropout) == ("none", 0.0)
    # anything else than a probability or auto is refused, naming the key
    with pytest.raises(ConfigError, match=r"model.branch_dropout must be in \[0, 1\) or auto; got 1.0"):
        validate_config({"model": {"frontend": "conv", "branch_dropout": 1.0}})


def test_random_crop_auto_follows_the_front_end_and_the_inputs(tmp_path):
    from pipeline.config import ConfigError, validate_config

    short = _manifest(tmp_path, 16)  # lengths 4..14

    def mean_length(mean: float):
        return short.model_copy(update={"lengths": {
            "train": short.lengths["train"].model_copy(update={"mean": mean, "max": int(mean) + 1})}})

    manifest = mean_length(40.0)  # resnet's receptive field
    auto = {"model": {"frontend": "auto"}, "train": {"random_crop": "auto"}}
    resolved = resolve(RecurConfig(**auto), manifest)  # float inputs: resnet, so windows of 80-100%
    assert resolved.cfg.model.frontend == "resnet" and resolved.cfg.train.random_crop == 0.8
    assert resolved.decisions["train.random_crop"] == 0.8
    assert "budget.auto.train.random_crop" in budget_params(resolved)
    conv = {"model": {"frontend": "conv"}, "train": {"random_crop": "auto"}}
    assert resolve(RecurConfig(**conv), mean_length(14.0)).cfg.train.random_crop == 0.8  # conv's is 14
    for cfg, m in [(RecurConfig(**auto), mean_length(39.9)),  # rows shorter than what a feature reads
                   (RecurConfig(**conv), mean_length(13.9)),
                   (RecurConfig(**auto), _tokens(manifest)),  # tokens: an embedding, no front-end
                   (RecurConfig(model={"frontend": "none"}, train={"random_crop": "auto"}), manifest),
                   (RecurConfig(data={"task": "forecast"}, **auto), manifest)]:
        off = resolve(cfg, m)
        assert off.cfg.train.random_crop == 0.0 and "train.random_crop" not in off.decisions
    # an explicit share is kept, and refused where it cannot apply, naming the key
    assert resolve(RecurConfig(train={"random_crop": 0.6}), manifest).cfg.train.random_crop == 0.6
    with pytest.raises(ConfigError, match="train.random_crop 0.6 cuts float sequences .* inputs are tokens"):
        resolve(RecurConfig(train={"random_crop": 0.6}), _tokens(manifest))
    with pytest.raises(ConfigError, match=r"train.random_crop must be in \[0, 1\) or auto; got 1.0"):
        validate_config({"train": {"random_crop": 1.0}})
    with pytest.raises(ConfigError, match="train.random_crop cuts classification rows .* not 'forecast'"):
        validate_config({"data": {"task": "forecast"}, "train": {"random_crop": 0.8}})


def test_the_naive_blend_is_refused_before_training_when_val_holds_no_windows(tmp_path):
    from pipeline.config import ConfigError

    manifest = _manifest(tmp_path, 16)
    forecast = manifest.model_copy(update={"task": "forecast"})
    cfg = RecurConfig(data={"task": "forecast"}, model={"naive_blend": True}, registry={"metric": "mase"})
    assert resolve(cfg, forecast).cfg.model.naive_blend  # 8 val rows: weighed on them after training
    empty = forecast.splits["val"].model_copy(update={"rows": 0})
    no_val = forecast.model_copy(update={"splits": {**forecast.splits, "val": empty}})
    with pytest.raises(ConfigError, match="model.naive_blend weighs .* val split has none"):
        resolve(cfg, no_val)
