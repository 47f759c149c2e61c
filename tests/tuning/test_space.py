"""Search spaces from YAML: every kind parses, bad entries name the key, values are checked."""

import pytest

from pipeline.config import RecurConfig
from pipeline.tuning.space import (
    SpaceError,
    check_space,
    parse_space,
    probe_values,
    to_tune,
    trial_config_dict,
)

BASE = RecurConfig().model_dump(mode="json")


def test_every_kind_parses_and_becomes_a_tune_domain():
    from ray.tune.search.sample import Categorical, Float, Integer

    parsed = parse_space({
        "model.cell": {"choice": ["lstm", "gru"]},
        "train.lr": {"loguniform": [1e-4, 1e-2]},
        "model.dropout": {"uniform": [0.0, 0.3]},
        "model.hidden_size": {"quniform": [16, 64, 16]},
        "model.num_layers": {"randint": [1, 3]},
        "model.bidirectional": {"grid": [True, False]},
    })
    check_space(BASE, parsed)
    space = to_tune(parsed)
    assert isinstance(space["model.cell"], Categorical)
    assert isinstance(space["train.lr"], Float) and isinstance(space["model.num_layers"], Integer)
    assert space["model.bidirectional"] == {"grid_search": [True, False]}


@pytest.mark.parametrize("entry,message", [
    ({"train.lr": {"lognormal": [1, 2]}}, "tune.space.train.lr: unknown kind 'lognormal'"),
    ({"train.lr": {"uniform": [0.1]}}, r"tune.space.train.lr.uniform: expected \[low, high\]"),
    ({"train.lr": {"uniform": [0.2, 0.1]}}, "low < high"),
    ({"train.lr": {"loguniform": [0, 0.1]}}, "bounds must be > 0"),
    ({"model.num_layers": {"randint": [1.5, 3]}}, "bounds must be integers"),
    ({"model.cell": ["lstm", "gru"]}, "tune.space.model.cell: expected one of"),
    ({"model.cell": {"choice": []}}, "expected a non-empty list"),
])
def test_bad_entries_name_the_key(entry, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(entry)


def test_values_are_checked_against_the_config_before_any_trial():
    with pytest.raises(SpaceError, match=r"tune.space.model.cell: choice value 'transformer'"):
        check_space(BASE, parse_space({"model.cell": {"choice": ["gru", "transformer"]}}))
    with pytest.raises(SpaceError, match=r"(?s)tune.space.model.hidden_sise.*unknown key"):
        check_space(BASE, parse_space({"model.hidden_sise": {"choice": [8]}}))
    with pytest.raises(SpaceError, match=r"model.dropout: uniform value 1.5"):
        check_space(BASE, parse_space({"model.dropout": {"uniform": [0.0, 1.5]}}))


def test_probe_values_and_trial_config():
    assert probe_values("quniform", [16, 70, 16]) == [16, 64]
    assert probe_values("randint", [1, 3]) == [1, 2]
    tree = trial_config_dict(BASE, {"train.lr": 0.01, "model.cell": "gru"})
    cfg = RecurConfig.model_validate(tree)
    assert cfg.train.lr == 0.01 and cfg.model.cell == "gru"
    assert BASE["train"]["lr"] != 0.01  # the base is not modified
