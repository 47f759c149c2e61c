"""Direct multi-step forecasting: a recurrent encoder over the history, one linear head that
emits every horizon step at once, optionally wrapped in per-window normalization and differencing,
with a learned linear skip from the seasonal-naive forecast and a blend with it weighted on a holdout.

Shape suffixes: B batch, T history steps (padded), C channels (the series' value columns, the
same for inputs and forecasts), H horizon steps.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models.attention import lengths_to_mask
from pipeline.models.classifier import SequenceClassifier
from pipeline.models.instance import instance_normalize

# The seasonal skip's weights at the start of training (`Forecaster`'s `season`).
SKIP_INIT = 0.0


def instance_denormalize(y_BHC: torch.Tensor, mean_B1C: torch.Tensor, std_B1C: torch.Tensor) -> torch.Tensor:
    """RevIN's second half: a forecast on the window's scale back to the input's, y * std + mean."""
    return y_BHC * std_B1C + mean_B1C


def last_values(x_BTC: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
    """x_B1C: each window's last valid step."""
    index_B11 = (lengths_B.to(x_BTC.device) - 1).view(-1, 1, 1).expand(-1, 1, x_BTC.shape[2])
    return x_BTC.gather(1, index_B11)


def seasonal_naive_forecast(x_BTC: torch.Tensor, lengths_B: torch.Tensor, *, horizon: int,
                            period: int) -> torch.Tensor:
    """y_BHC: each padded history's last season repeated, step h = x[T - m + (h mod m)] with
    m = min(period, T) (the forecast task's `seasonal_naive`, on padded tensors)."""
    lengths_B = lengths_B.to(x_BTC.device).long()
    m_B = lengths_B.clamp(max=period)
    h_H = torch.arange(horizon, device=x_BTC.device)
    index_BH = (lengths_B - m_B)[:, None] + h_H[None, :] % m_B[:, None]
    return x_BTC.gather(1, index_BH[:, :, None].expand(-1, -1, x_BTC.shape[2]))


def first_differences(x_BTC: torch.Tensor, lengths_B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_BTC, lengths_B -> d_BT'C, lengths'_B: d_t = x_{t+1} - x_t over each window's valid steps.

    A window of L steps has L - 1 differences; a window of one step gets one zero difference (it
    says "no change seen"), so every length stays >= 1 and T' = max(T - 1, 1). Pad steps are 0.
    The new lengths live on the device `lengths_B` came on (the encoder packs with them on the CPU).
    """
    batch, steps, channels = x_BTC.shape
    d_lengths_B = (lengths_B - 1).clamp_min(1)
    d_BTC = x_BTC.new_zeros(batch, max(steps - 1, 1), channels)
    if steps > 1:
        valid_BT1 = lengths_to_mask(lengths_B.to(x_BTC.device) - 1, steps - 1).unsqueeze(-1)
        d_BTC[:, : steps - 1] = (x_BTC[:, 1:] - x_BTC[:, :-1]).masked_fill(~valid_BT1, 0.0)
    return d_BTC, d_lengths_B


class Forecaster(nn.Module):
    """x_BTC (normalized history), lengths_B -> y_BHC (normalized forecast of the next H steps).

    Direct rather than recursive: the head predicts all H x C values from one summary of the
    history, so errors do not compound step by step and training needs no decoding loop.
    The front-end (conv / patch), the encoder, the pooling (last | mean | max | attention) and the
    linear head are exactly those of `SequenceClassifier`, whose K outputs are here the H * C
    forecast values.

    Two optional wrappers around that body make it survive trend and level shift, where test
    values lie outside anything the train split's global statistics saw:

    instance_norm (RevIN, Kim et al. 2022): each window and channel is centred on its own mean
        and divided by its own std (over the valid steps, floored at INSTANCE_STD_FLOOR) before
        the body; the body's output is mapped back with y * std + mean. A body that outputs 0
        forecasts the window's mean. The forecast is then exactly equivariant to adding a
        constant to a history and to scaling it by a positive factor (while std > the floor).
        Centred on the mean, not the last value, and without RevIN's learnable affine: on
        trending and multiplicative-seasonal series neither variant beat the plain form.
    difference: the body sees first differences (L - 1 steps; one zero difference for a
        one-step history) and forecasts H differences; the forecast is the last valid value
        plus their running sum. A body that outputs 0 forecasts the last value (naive).
    both: differences first, then instance-normalized. Differencing removes the level; the
        instance mean of the differences is the window's average slope, so a zero body output
        forecasts "last value + average slope per step" (random walk with drift), and the
        std puts steep and flat windows on one scale. The other order would be pointless: the
        mean cancels in a difference, leaving only a division by the level's std.

    season (the seasonal skip, `model.seasonal_skip`; 0: none): the forecast also gets a learned
        multiple of the seasonal-naive forecast (the history's last `season` steps repeated, the
        gate's own baseline), one weight per horizon step and channel starting at SKIP_INIT, measured
        from what a zero body forecasts: y = out(body) + w * (naive - out(0)). A linear highway from
        the input to the output, as LSTNet's autoregressive component (Lai et al. 2018), restricted
        to the one lag that carries a season: with w at 1 a zero body forecasts seasonal naive, with
        w at 0 the model is the one without the skip.

    blend_season (the naive blend, `model.naive_blend`; 0: none): the forecast, skip included,
        becomes v * forecast + (1 - v) * seasonal naive (period `blend_season`), one v per channel
        in the buffer `naive_blend_C`. It is 1 (the forecast itself) while training; after
        training, `set_naive_blend` gives it the weights that forecast the val windows best
        (`pipeline.tasks.forecast.blend_weights`), so a model and its serving copy carry them.

    `model_args` holds exactly the constructor keywords, so a checkpoint can rebuild the model;
    checkpoints written before the front-end or instance_norm/difference existed rebuild with
    them off (no parameters are added by either wrapper, so old state dicts load unchanged); the
    seasonal skip's weights and `season` exist only where it is on, the blend's likewise.
    """

    def __init__(
        self,
        *,
        input_size: int,
        horizon: int,
        hidden_size: int = 64,
        num_layers: int = 1,
        cell: str = "lstm",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        attention: str = "additive",
        input_layer_norm: bool = False,
        frontend: str = "none",
        frontend_channels: int = 64,
        patch: int = 1,
        instance_norm: bool = False,
        difference: bool = False,
        season: int = 0,
        blend_season: int = 0,
    ) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if season < 0:
            raise ValueError(f"season must be >= 0 (0: no seasonal skip), got {season}")
        if blend_season < 0:
            raise ValueError(f"blend_season must be >= 0 (0: no naive blend), got {blend_season}")
        self.model_args = dict(
            input_size=input_size, horizon=horizon, hidden_size=hidden_size, num_layers=num_layers,
            cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional, dropout=dropout,
            pooling=pooling, attention=attention, input_layer_norm=input_layer_norm,
            frontend=frontend, frontend_channels=frontend_channels, patch=patch,
            instance_norm=instance_norm, difference=difference,
        )
        if season:  # only then, so checkpoints without the skip keep their arguments and weights
            self.model_args["season"] = season
        if blend_season:
            self.model_args["blend_season"] = blend_season
        self.blend_season = blend_season
        # not a parameter: training never moves it; set after training from the val windows
        self.register_buffer("naive_blend_C", torch.ones(input_size) if blend_season else None)
        self.season = season
        self.skip_HC = nn.Parameter(torch.full((horizon, input_size), SKIP_INIT)) if season else None
        self.horizon = horizon
        self.num_channels = input_size
        self.pooling = pooling
        self.instance_norm = bool(instance_norm)
        self.difference = bool(difference)
        self.body = SequenceClassifier(
            input_size=input_size, num_classes=horizon * input_size, hidden_size=hidden_size,
            num_layers=num_layers, cell=cell, nonlinearity=nonlinearity, bidirectional=bidirectional,
            dropout=dropout, pooling=pooling, attention=attention, input_layer_norm=input_layer_norm,
            frontend=frontend, frontend_channels=frontend_channels, patch=patch,
        )

    def forward(self, x_BTC: torch.Tensor, lengths_B: torch.Tensor) -> torch.Tensor:
        """Forecast a padded batch of histories.

        Args:
            x_BTC: normalized histories (the train split's per-channel statistics), padded after
                each one's end.
            lengths_B: valid steps per history (>= 1), on any device.

        Returns:
            y_BHC: the forecast of the H steps after each history's last step, on the same
            (globally normalized) scale as x_BTC.
        """
        batch = x_BTC.shape[0]
        z_BTC, z_lengths_B = x_BTC, lengths_B
        if self.difference:
            last_B1C = last_values(x_BTC, lengths_B)
            z_BTC, z_lengths_B = first_differences(x_BTC, lengths_B)
        if self.instance_norm:
            z_BTC, mean_B1C, std_B1C = instance_normalize(z_BTC, z_lengths_B)

        def output(y_BHC: torch.Tensor) -> torch.Tensor:
            """The body's output on the input's scale: denormalized, differences summed."""
            if self.instance_norm:
                y_BHC = instance_denormalize(y_BHC, mean_B1C, std_B1C)
            if self.difference:
                y_BHC = last_B1C + y_BHC.cumsum(dim=1)
            return y_BHC

        body_BHC = self.body(z_BTC, z_lengths_B).view(batch, self.horizon, self.num_channels)
        y_BHC = output(body_BHC)
        naive: dict[int, torch.Tensor] = {}  # by period: the skip and the blend usually share one

        def seasonal_naive(period: int) -> torch.Tensor:
            if period not in naive:
                naive[period] = seasonal_naive_forecast(x_BTC, lengths_B, horizon=self.horizon, period=period)
            return naive[period]

        if self.skip_HC is not None:
            y_BHC = y_BHC + self.skip_HC * (seasonal_naive(self.season) - output(torch.zeros_like(body_BHC)))
        if self.naive_blend_C is not None:
            blend_C = self.naive_blend_C
            y_BHC = blend_C * y_BHC + (1.0 - blend_C) * seasonal_naive(self.blend_season)
        return y_BHC

    def set_naive_blend(self, weights_C: torch.Tensor | list[float]) -> None:
        """The blend's weights on the model's own forecast, one per channel in [0, 1]."""
        if self.naive_blend_C is None:
            raise ValueError("this forecaster has no naive blend (built without blend_season)")
        weights = torch.as_tensor(weights_C, dtype=self.naive_blend_C.dtype).reshape(-1)
        if weights.numel() != self.num_channels or not bool(((weights >= 0) & (weights <= 1)).all()):
            raise ValueError(f"need {self.num_channels} blend weight(s) in [0, 1]; got {weights.tolist()}")
        self.naive_blend_C.copy_(weights.to(self.naive_blend_C.device))


def without_naive_blend(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with any naive blend set back to the model's own forecast (weights 1): what a
    fine-tune starts from, so training fits the model and not a mix fitted to older val windows."""
    return {k: torch.ones_like(v) if k.endswith("naive_blend_C") else v for k, v in state_dict.items()}
