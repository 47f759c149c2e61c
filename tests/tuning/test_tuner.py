"""Schedulers and search algorithms from the `tune` section (no trials run here)."""

import pytest

from pipeline.config import load_config
from pipeline.tuning.space import SpaceError, parse_space, to_tune
from pipeline.tuning.tuner import check_search, scheduler_for, search_for

SPACE = ["tune.space={train.lr: {loguniform: [0.001, 0.01]}, model.cell: {choice: [gru, lstm]}}"]


@pytest.mark.parametrize("name,cls", [
    ("fifo", "FIFOScheduler"), ("asha", "AsyncHyperBandScheduler"), ("hyperband", "HyperBandScheduler"),
    ("pbt", "PopulationBasedTraining"),
])
def test_scheduler_by_name(name, cls):
    cfg = load_config([], [*SPACE, f"tune.scheduler.name={name}", "train.epochs=7"])
    scheduler = scheduler_for(cfg, to_tune(parse_space(cfg.tune.space)))
    assert cls in [c.__name__ for c in type(scheduler).__mro__]
    if name == "asha":
        assert scheduler._max_t == 7  # defaults to train.epochs
    if name == "pbt":
        assert scheduler._quantile_fraction == 0.25


def test_search_algorithms_carry_the_concurrency_limit():
    cfg = load_config([], SPACE)
    parsed = parse_space(cfg.tune.space)
    assert search_for(cfg, parsed, max_concurrent=2).max_concurrent == 2
    optuna = search_for(load_config([], [*SPACE, "tune.search=optuna"]), parsed, max_concurrent=3)
    assert type(optuna).__name__ == "ConcurrencyLimiter" and optuna.max_concurrent == 3


def test_search_and_space_kinds_must_fit():
    grid = parse_space({"model.cell": {"grid": ["gru", "lstm"]}, "train.lr": {"uniform": [0.001, 0.01]}})
    with pytest.raises(SpaceError,
                       match="tune.search=optuna samples every key; tune.space.model.cell uses grid"):
        check_search(load_config([], ["tune.search=optuna"]), grid)
    with pytest.raises(SpaceError,
                       match="tune.search=grid needs every tune.space key as grid; tune.space.train.lr"):
        check_search(load_config([], ["tune.search=grid"]), grid)


def test_pbt_resamples_or_shifts_a_choice_instead_of_multiplying_it():
    from ray.tune.schedulers.pbt import _explore

    cfg = load_config([], [*SPACE, "tune.scheduler.name=pbt"])
    mutations = scheduler_for(cfg, to_tune(parse_space(cfg.tune.space)))._hyperparam_mutations
    assert mutations["model.cell"] == ["gru", "lstm"]
    for _ in range(20):  # perturbing (not resampling) multiplies numeric values by 0.8 or 1.2
        new, _ops = _explore({"model.cell": "gru", "train.lr": 0.005}, mutations, 0.0, [0.8, 1.2], None)
        assert new["model.cell"] in ("gru", "lstm") and round(new["train.lr"], 6) in (0.004, 0.006)


def test_pbt_refuses_architecture_keys_before_the_study():
    """PBT copies a checkpoint into a trial and then changes its values: an architecture key
    (model.cell, ...) would load an LSTM's weights into a GRU, so the space is refused, naming it."""
    pbt = load_config([], [*SPACE, "tune.scheduler.name=pbt"])
    with pytest.raises(SpaceError, match=r"tune.space.model.cell: tune.scheduler pbt copies one trial's "
                                         r"checkpoint.*weights of one architecture do not load"):
        check_search(pbt, parse_space(pbt.tune.space))
    # grid values are copied with the checkpoint, never perturbed; dropout changes no weight
    fine = {"model.cell": {"grid": ["gru", "lstm"]}, "model.dropout": {"uniform": [0.0, 0.3]},
            "train.lr": {"loguniform": [0.001, 0.01]}, "data.batch_size": {"choice": [8, 16]}}
    check_search(pbt, parse_space(fine))
    check_search(load_config([], SPACE), parse_space(pbt.tune.space))  # asha: any key


def test_asha_max_t_is_the_longest_trial_of_the_space(toy_dataset):
    """train.min_steps and the batch size in the space decide how long a trial trains: ASHA's
    max_t follows the longest, so it never stops a trial at train.epochs as if it had judged it."""
    from pipeline.data.dataset import read_manifest
    from pipeline.tuning.tuner import longest_trial

    manifest = read_manifest(str(toy_dataset))  # 96 train rows: 48 a worker, 2 workers
    cfg = load_config([], [*SPACE, "train.epochs=3", "data.batch_size=8"])
    space = parse_space({"train.min_steps": {"choice": [0, 60]}, "data.batch_size": {"choice": [8, 16]}})
    # 60 steps at batch 16 (3 steps an epoch) are 20 epochs; at batch 8 (6 steps), 10
    longest = longest_trial(cfg.model_dump(mode="json"), space, manifest)
    assert longest == 20
    assert scheduler_for(cfg, to_tune(space), longest=longest)._max_t == 20
    assert longest_trial(cfg.model_dump(mode="json"), parse_space(cfg.tune.space), manifest) == 3
    # and a run may restart its schedule up to train.max_epochs: that is its longest
    restarting = load_config([], [*SPACE, "train.epochs=3", "train.max_epochs=12"])
    restarting_space = parse_space(restarting.tune.space)
    assert longest_trial(restarting.model_dump(mode="json"), restarting_space, manifest) == 12


@pytest.mark.parametrize("overlay", ["configs/tune-quickstart.yaml", "benchmarks/tune-space.yaml"])
def test_shipped_tuning_overlays_pass_the_study_checks(overlay):
    from pathlib import Path

    import yaml

    from pipeline.workflow.tune import check_study

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config([repo / "configs" / "quickstart.yaml", repo / overlay])
    studied = check_study(cfg)  # it raises on the first key or value a study would refuse
    assert studied.train.train_on_val is False and studied.tune == cfg.tune
    assert set(cfg.tune.space) == set(yaml.safe_load((repo / overlay).read_text())["tune"]["space"])


def test_a_study_never_trains_on_the_val_rows_it_ranks_by():
    from pathlib import Path

    from pipeline.tuning.space import SpaceError
    from pipeline.workflow.tune import check_study

    repo = Path(__file__).resolve().parents[2]
    cfg = load_config([repo / "configs" / "classify.yaml", repo / "configs" / "tune-quickstart.yaml"])
    assert cfg.train.train_on_val == "auto"
    assert check_study(cfg).train.train_on_val is False  # auto is off under tune
    on = cfg.model_copy(update={"train": cfg.train.model_copy(update={"train_on_val": True})})
    with pytest.raises(SpaceError, match="train.train_on_val"):
        check_study(on)
