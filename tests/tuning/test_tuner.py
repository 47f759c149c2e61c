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
