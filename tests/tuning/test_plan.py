"""Trial concurrency is planned from the cluster's resources before a study starts."""

import pytest

from pipeline.training.resources import ResourceError
from pipeline.tuning.plan import plan_trials, study_size


def _plan(**kw):
    args = dict(num_workers=2, cpus_per_worker=0.5, use_gpu=False, reserve_cpus_for_data=0.5,
                cluster={"CPU": 2.0}, requested=None, num_trials=8)
    args.update(kw)
    return plan_trials(**args)


def test_as_many_trials_as_fit_after_the_data_reserve():
    # 2 CPUs - 1 kept for Ray Data (its file listing asks a whole CPU, more than the 0.5
    # reserved) = 1 free; a trial takes 2 x 0.5 = 1 (its own trainable none) -> one at a time
    plan = _plan()
    assert plan.concurrency == 1 and plan.cpus_per_trial == pytest.approx(1.0) and plan.warning is None
    assert _plan(cluster={"CPU": 16.0}).concurrency == 8  # capped by the trials there are
    assert _plan(cluster={"CPU": 16.0}, num_trials=20).concurrency == 15


def test_asking_for_more_than_fits_lowers_concurrency_with_a_warning():
    plan = _plan(requested=4)
    assert plan.concurrency == 1
    assert "tune.max_concurrent_trials=4 but only 1 trial(s)" in plan.warning


def test_a_trial_that_cannot_fit_fails_naming_the_keys():
    with pytest.raises(ResourceError,
                       match=r"resources.num_workers=4 x resources.cpus_per_worker=1.*has 2 CPUs"):
        _plan(num_workers=4, cpus_per_worker=1.0)


def test_gpus_bound_concurrency():
    assert _plan(use_gpu=True, cluster={"CPU": 32.0, "GPU": 4.0}).concurrency == 2
    with pytest.raises(ResourceError, match="GPUs"):
        _plan(use_gpu=True, cluster={"CPU": 32.0, "GPU": 1.0})


def test_grid_values_multiply_the_trials_that_may_run_at_once():
    # num_samples 1 over a 3 x 2 grid is 6 trials: 6 run at once on 16 CPUs, not 1
    space = {"model.cell": ("grid", ["gru", "lstm", "rnn"]), "model.bidirectional": ("grid", [True, False]),
             "train.lr": ("loguniform", [1e-3, 1e-2])}
    assert study_size(1, space) == 6 and study_size(2, space) == 12
    assert _plan(cluster={"CPU": 16.0}, num_trials=study_size(1, space)).concurrency == 6
