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
    assert type(scheduler).__name__ == cls
    if name == "asha":
        assert scheduler._max_t == 7  # defaults to train.epochs


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
