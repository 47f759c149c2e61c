"""Forecaster: instance normalization and differencing round-trip, make the forecast invariant to a
level offset and equivariant to scale, keep padding out, and leave old checkpoints as they were;
the seasonal skip adds the seasonal-naive forecast from where a zero body stands; the naive blend
mixes the whole forecast with seasonal naive by weights set after training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.data.preprocess import Preprocessing
from pipeline.models import model_from_args
from pipeline.models.forecaster import (
    SKIP_INIT,
    Forecaster,
    first_differences,
    instance_denormalize,
    last_values,
    seasonal_naive_forecast,
    without_naive_blend,
)
from pipeline.models.instance import INSTANCE_STD_FLOOR, instance_normalize, window_statistics
from pipeline.tasks import build_task
from pipeline.tasks.forecast import seasonal_naive


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Three 2-channel histories of 6, 3 and 1 steps, padded with junk (not zeros) so a leak shows."""
    torch.manual_seed(0)
    x_BTC = torch.randn(3, 6, 2) * 3 + 5
    lengths_B = torch.tensor([6, 3, 1])
    x_BTC[1, 3:] = 99.0
    x_BTC[2, 1:] = -99.0
    return x_BTC, lengths_B


def _zero_body(model: Forecaster) -> Forecaster:
    """The real model with its linear head's weights and bias set to 0: the body outputs zeros."""
    with torch.no_grad():
        model.body.head.weight.zero_()
        model.body.head.bias.zero_()
    return model.eval()


def test_window_statistics_use_valid_steps_only():
    x_BTC, lengths_B = _padded_batch()
    mean_B1C, std_B1C = window_statistics(x_BTC, lengths_B)
    for b, length in enumerate(lengths_B.tolist()):
        valid = x_BTC[b, :length]
        assert torch.allclose(mean_B1C[b, 0], valid.mean(dim=0), atol=1e-5)
        expected_std = valid.std(dim=0, unbiased=False).clamp_min(INSTANCE_STD_FLOOR)
        assert torch.allclose(std_B1C[b, 0], expected_std, atol=1e-5)
    # a one-step history has std 0, floored
    assert torch.equal(std_B1C[2, 0], torch.full((2,), INSTANCE_STD_FLOOR))


@pytest.mark.parametrize("padded", [True, False])
def test_normalize_then_denormalize_is_the_identity(padded):
    x_BTC, lengths_B = _padded_batch()
    if not padded:
        x_BTC, lengths_B = x_BTC[:1], lengths_B[:1]
    z_BTC, mean_B1C, std_B1C = instance_normalize(x_BTC, lengths_B)
    restored_BTC = instance_denormalize(z_BTC, mean_B1C, std_B1C)
    for b, length in enumerate(lengths_B.tolist()):
        assert torch.allclose(restored_BTC[b, :length], x_BTC[b, :length], atol=1e-5)
        assert torch.all(z_BTC[b, length:] == 0)  # pads exactly 0, whatever was there
        if length > 1:  # each window comes out with mean 0 and std 1 over its valid steps
            assert torch.allclose(z_BTC[b, :length].mean(dim=0), torch.zeros(2), atol=1e-5)
            assert torch.allclose(z_BTC[b, :length].std(dim=0, unbiased=False), torch.ones(2), atol=1e-5)


def test_a_body_that_outputs_zeros_forecasts_each_windows_mean():
    x_BTC, lengths_B = _padded_batch()
    model = _zero_body(Forecaster(input_size=2, horizon=4, hidden_size=8, cell="gru", instance_norm=True))
    y_BHC = model(x_BTC, lengths_B)
    for b, length in enumerate(lengths_B.tolist()):
        expected_HC = x_BTC[b, :length].mean(dim=0).expand(4, 2)
        assert torch.allclose(y_BHC[b], expected_HC, atol=1e-5)


def test_first_differences_by_hand():
    x_BTC = torch.tensor([[1.0, 3.0, 6.0, 10.0], [2.0, 5.0, 7.0, 7.0], [4.0, 7.0, 7.0, 7.0]]).unsqueeze(-1)
    d_BTC, d_lengths_B = first_differences(x_BTC, torch.tensor([4, 2, 1]))
    assert d_lengths_B.tolist() == [3, 1, 1]
    # [1, 3, 6, 10] -> [2, 3, 4]; [2, 5] -> [3] then pads; a one-step history -> one zero difference
    assert d_BTC[:, :, 0].tolist() == [[2.0, 3.0, 4.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    assert last_values(x_BTC, torch.tensor([4, 2, 1]))[:, 0, 0].tolist() == [10.0, 5.0, 4.0]
    # all histories one step long: still one (zero) step for the body
    d_BTC, d_lengths_B = first_differences(torch.ones(2, 1, 3), torch.tensor([1, 1]))
    assert d_BTC.shape == (2, 1, 3) and torch.all(d_BTC == 0) and d_lengths_B.tolist() == [1, 1]


def test_a_body_that_forecasts_zero_differences_gives_the_last_value():
    x_BTC, lengths_B = _padded_batch()
    model = _zero_body(Forecaster(input_size=2, horizon=3, hidden_size=8, cell="gru", difference=True))
    y_BHC = model(x_BTC, lengths_B)
    for b, length in enumerate(lengths_B.tolist()):
        assert torch.allclose(y_BHC[b], x_BTC[b, length - 1].expand(3, 2), atol=1e-5), b


def test_with_both_a_zero_body_continues_the_average_slope():
    # zero on the differences' own scale is their mean, the window's average slope per step:
    # last value + h * slope (random walk with drift); a one-step history has slope 0
    x_BTC, lengths_B = _padded_batch()
    model = _zero_body(Forecaster(input_size=2, horizon=3, hidden_size=8, cell="gru", difference=True,
                                  instance_norm=True))
    y_BHC = model(x_BTC, lengths_B)
    for b, length in enumerate(lengths_B.tolist()):
        slope_C = (x_BTC[b, length - 1] - x_BTC[b, 0]) / max(length - 1, 1)
        expected_HC = x_BTC[b, length - 1] + slope_C * torch.arange(1, 4).unsqueeze(1)
        assert torch.allclose(y_BHC[b], expected_HC, atol=1e-4), b


def _with_skip(model: Forecaster) -> Forecaster:
    """In eval mode, the seasonal skip's weights (if any) drawn away from their start, so the skip
    is part of what a test checks whatever SKIP_INIT is."""
    if model.skip_HC is not None:
        with torch.no_grad():
            model.skip_HC.uniform_(0.3, 1.2)
    return model.eval()


def _forecast_task() -> tuple:
    """A forecast task with train statistics (mean 20, std 4) and raw histories of several lengths."""
    pre = Preprocessing(mean=[20.0], std=[4.0], task="forecast",
                        task_params={"window": 12, "horizon": 5, "stride": 1, "seasonal_period": 4})
    rng = np.random.default_rng(1)
    histories = [list(rng.normal(20, 4, size=n)) for n in (12, 7, 3, 1)]
    return build_task(None, pre), histories


def _raw_forecasts(task, model: Forecaster, histories: list[list[float]]) -> np.ndarray:
    out = task.predict(model, pd.DataFrame({"x": histories}), {})  # raw in, raw out, padded together
    return np.stack([np.asarray(f, dtype=np.float64) for f in out["forecast"]])


@pytest.mark.parametrize("season", [0, 4])
@pytest.mark.parametrize("instance_norm,difference", [(True, False), (False, True), (True, True)])
def test_forecast_moves_with_a_constant_offset_in_raw_units(instance_norm, difference, season):
    task, histories = _forecast_task()
    torch.manual_seed(0)
    model = _with_skip(Forecaster(input_size=1, horizon=5, hidden_size=16, cell="gru",
                                  instance_norm=instance_norm, difference=difference, season=season))
    offset = 500.0  # 120 train stds above anything seen in training
    base_NHC = _raw_forecasts(task, model, histories)
    moved_NHC = _raw_forecasts(task, model, [[v + offset for v in h] for h in histories])
    assert np.allclose(moved_NHC, base_NHC + offset, rtol=0, atol=1e-3)


@pytest.mark.parametrize("season", [0, 4])
@pytest.mark.parametrize("instance_norm,difference", [(True, False), (True, True)])
def test_forecast_scales_with_the_history(instance_norm, difference, season):
    task, histories = _forecast_task()
    torch.manual_seed(0)
    model = _with_skip(Forecaster(input_size=1, horizon=5, hidden_size=16, cell="gru",
                                  instance_norm=instance_norm, difference=difference, season=season))
    base_NHC = _raw_forecasts(task, model, histories)
    for factor in (0.1, 7.0):
        scaled_NHC = _raw_forecasts(task, model, [[v * factor for v in h] for h in histories])
        assert np.allclose(scaled_NHC, base_NHC * factor, rtol=1e-4, atol=1e-3), factor


def test_without_instance_norm_an_offset_changes_the_forecast_shape():
    # the control: the globally normalized model sees an offset history as new inputs
    task, histories = _forecast_task()
    torch.manual_seed(0)
    model = Forecaster(input_size=1, horizon=5, hidden_size=16, cell="gru").eval()
    base_NHC = _raw_forecasts(task, model, histories)
    moved_NHC = _raw_forecasts(task, model, [[v + 500.0 for v in h] for h in histories])
    assert np.abs(moved_NHC - (base_NHC + 500.0)).max() > 1.0


@pytest.mark.parametrize("season", [0, 2])
@pytest.mark.parametrize("instance_norm,difference", [(True, False), (True, True)])
def test_padding_never_leaks_and_the_model_rebuilds(instance_norm, difference, season):
    x_BTC, lengths_B = _padded_batch()
    torch.manual_seed(0)
    model = _with_skip(Forecaster(input_size=2, horizon=3, hidden_size=8, cell="gru", pooling="mean",
                                  instance_norm=instance_norm, difference=difference, season=season))
    y_BHC = model(x_BTC, lengths_B)
    for b, length in enumerate(lengths_B.tolist()):
        alone = model(x_BTC[b : b + 1, :length], lengths_B[b : b + 1])
        assert torch.allclose(alone, y_BHC[b : b + 1], atol=1e-5), b
    rebuilt = model_from_args(model.model_args, "Forecaster").eval()
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.instance_norm == instance_norm and rebuilt.difference == difference
    assert rebuilt.season == season and ("season" in model.model_args) == bool(season)
    assert torch.equal(rebuilt(x_BTC, lengths_B), y_BHC)


def test_a_checkpoint_from_before_the_wrappers_loads_with_todays_behaviour():
    # model_args as Forecaster stored them before instance_norm, difference and the front-end
    old_args = dict(input_size=2, horizon=3, hidden_size=8, num_layers=1, cell="gru", nonlinearity="tanh",
                    bidirectional=False, dropout=0.0, pooling="last", attention="additive",
                    input_layer_norm=False)
    torch.manual_seed(0)
    reference = Forecaster(**old_args).eval()
    old_state = dict(reference.state_dict())
    rebuilt = model_from_args(old_args, "Forecaster").eval()
    rebuilt.load_state_dict(old_state)  # strict: no keys added, none missing
    assert not rebuilt.instance_norm and not rebuilt.difference and rebuilt.skip_HC is None
    x_BTC, lengths_B = _padded_batch()
    assert torch.equal(rebuilt(x_BTC, lengths_B), reference(x_BTC, lengths_B))


def test_front_end_keywords_reach_the_body():
    x_BTC, lengths_B = _padded_batch()
    torch.manual_seed(0)
    model = Forecaster(input_size=2, horizon=3, hidden_size=8, cell="gru", frontend="conv",
                       frontend_channels=4, patch=2, instance_norm=True).eval()
    assert model.body.frontend is not None and model.body.patch == 2
    assert model(x_BTC, lengths_B).shape == (3, 3, 2)
    assert model_from_args(model.model_args, "Forecaster").body.model_args["frontend_channels"] == 4


# ------------------------------------------------------------------ the seasonal skip


@pytest.mark.parametrize("period", [1, 2, 4, 9])
def test_seasonal_naive_forecast_is_the_tasks_baseline_on_padded_histories(period):
    # given histories of 6, 3 and 1 steps padded with junk; 9 is longer than every history
    x_BTC, lengths_B = _padded_batch()
    got_BHC = seasonal_naive_forecast(x_BTC, lengths_B, horizon=5, period=period)
    steps_NC = np.concatenate([x_BTC[b, :n].numpy() for b, n in enumerate(lengths_B.tolist())])
    expected_BHC = seasonal_naive(steps_NC, lengths_B.numpy(), horizon=5, period=period)
    assert np.array_equal(got_BHC.numpy(), expected_BHC)


ALL_WRAPPERS = [(False, False), (True, False), (False, True), (True, True)]  # instance_norm, difference


@pytest.mark.parametrize("instance_norm,difference", ALL_WRAPPERS)
def test_with_the_skip_at_one_a_zero_body_forecasts_seasonal_naive(instance_norm, difference):
    x_BTC, lengths_B = _padded_batch()
    model = _zero_body(Forecaster(input_size=2, horizon=5, hidden_size=8, cell="gru",
                                  instance_norm=instance_norm, difference=difference, season=4))
    assert torch.equal(model.skip_HC.detach(), torch.full((5, 2), SKIP_INIT))
    with torch.no_grad():
        model.skip_HC.fill_(1.0)
    naive_BHC = seasonal_naive_forecast(x_BTC, lengths_B, horizon=5, period=4)
    assert torch.allclose(model(x_BTC, lengths_B), naive_BHC, atol=1e-4)


@pytest.mark.parametrize("instance_norm,difference", [(False, False), (True, False), (True, True)])
def test_with_the_skip_at_zero_the_model_is_the_one_without_it_and_learns(instance_norm, difference):
    x_BTC, lengths_B = _padded_batch()
    torch.manual_seed(0)
    plain = Forecaster(input_size=2, horizon=5, hidden_size=8, cell="gru", instance_norm=instance_norm,
                       difference=difference).eval()
    skip = Forecaster(input_size=2, horizon=5, hidden_size=8, cell="gru", instance_norm=instance_norm,
                      difference=difference, season=4).eval()
    skip.load_state_dict({**plain.state_dict(), "skip_HC": torch.zeros(5, 2)})
    assert torch.equal(skip(x_BTC, lengths_B), plain(x_BTC, lengths_B))
    skip(x_BTC, lengths_B).square().sum().backward()
    assert skip.skip_HC.grad is not None and skip.skip_HC.grad.abs().sum() > 0


def test_a_negative_season_is_refused():
    with pytest.raises(ValueError, match="season must be >= 0"):
        Forecaster(input_size=1, horizon=3, season=-1)


# ------------------------------------------------------------------ the naive blend


@pytest.mark.parametrize("season", [0, 4])
def test_the_naive_blend_starts_as_the_model_itself_and_is_no_parameter(season):
    x_BTC, lengths_B = _padded_batch()
    torch.manual_seed(0)
    plain = _with_skip(Forecaster(input_size=2, horizon=5, hidden_size=8, cell="gru", instance_norm=True,
                                  season=season))
    blended = Forecaster(input_size=2, horizon=5, hidden_size=8, cell="gru", instance_norm=True,
                         season=season, blend_season=3).eval()
    blended.load_state_dict({**plain.state_dict(), "naive_blend_C": torch.ones(2)})
    assert torch.equal(blended(x_BTC, lengths_B), plain(x_BTC, lengths_B))
    assert "naive_blend_C" not in dict(blended.named_parameters())  # training never moves it
    assert blended.model_args["blend_season"] == 3 and "blend_season" not in plain.model_args


@pytest.mark.parametrize("instance_norm,difference", ALL_WRAPPERS)
def test_a_blend_weight_mixes_the_forecast_with_seasonal_naive_per_channel(instance_norm, difference):
    x_BTC, lengths_B = _padded_batch()
    torch.manual_seed(0)
    model = _with_skip(Forecaster(input_size=2, horizon=5, hidden_size=8, cell="gru",
                                  instance_norm=instance_norm, difference=difference, season=4,
                                  blend_season=3))
    own_BHC = model(x_BTC, lengths_B)
    naive_BHC = seasonal_naive_forecast(x_BTC, lengths_B, horizon=5, period=3)
    model.set_naive_blend([0.0, 0.25])
    y_BHC = model(x_BTC, lengths_B)
    assert torch.equal(y_BHC[..., 0], naive_BHC[..., 0])  # weight 0: seasonal naive exactly
    assert torch.allclose(y_BHC[..., 1], 0.25 * own_BHC[..., 1] + 0.75 * naive_BHC[..., 1], atol=1e-6)
    rebuilt = model_from_args(model.model_args, "Forecaster").eval()
    rebuilt.load_state_dict(model.state_dict())  # the weights travel with the checkpoint
    assert torch.equal(rebuilt(x_BTC, lengths_B), y_BHC)


def test_blend_weights_outside_zero_to_one_or_of_the_wrong_count_are_refused():
    model = Forecaster(input_size=2, horizon=3, blend_season=2)
    for bad in ([1.2, 0.5], [-0.1, 0.5], [0.5]):
        with pytest.raises(ValueError, match=r"need 2 blend weight\(s\) in \[0, 1\]"):
            model.set_naive_blend(bad)
    with pytest.raises(ValueError, match="has no naive blend"):
        Forecaster(input_size=2, horizon=3).set_naive_blend([1.0, 1.0])
    with pytest.raises(ValueError, match="blend_season must be >= 0"):
        Forecaster(input_size=1, horizon=3, blend_season=-1)


def test_a_fine_tune_starts_from_the_model_not_from_its_blend():
    model = Forecaster(input_size=2, horizon=3, hidden_size=8, cell="gru", blend_season=2)
    model.set_naive_blend([0.1, 0.6])
    state = without_naive_blend(model.state_dict())
    assert torch.equal(state["naive_blend_C"], torch.ones(2))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items() if k != "naive_blend_C")
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}  # as DDP names them
    assert torch.equal(without_naive_blend(wrapped)["module.naive_blend_C"], torch.ones(2))
