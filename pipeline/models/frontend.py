"""Front-ends that run before the recurrent encoder: masked 1-D convolutions and temporal patching.

A hybrid CNN-RNN in the spirit of FCN / LSTM-FCN (Wang et al. 2017; Karim et al. 2018): three
convolution blocks find local shapes at full resolution (or, frontend "resnet", three residual
blocks of three each, Wang et al.'s ResNet), a strided convolution merges every
`patch` steps into one (so the RNN sees about T / patch steps), and the masked mean of the conv
features over each sequence's valid steps (the FCN's global average pooling) is handed to the
head next to the pooled recurrent state.

Everything here is masked, so pad steps never reach a valid step's output: the same sequence
padded to any batch length gives the same features (exactly the same ones in eval mode; in train
mode the batch statistics of the norm are taken over valid steps only).

Shape suffixes: B batch, T time steps (padded), C input channels, F front-end channels
(`frontend_channels`), S steps after patching (ceil(T / patch)).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from pipeline.models.attention import lengths_to_mask

FRONTENDS = ("none", "conv", "resnet")
# The FCN's kernel sizes (Wang et al. 2017), one conv block each; stride 1, "same" padding. Each
# residual block of "resnet" has the same three.
KERNELS = (8, 5, 3)
RESIDUAL_BLOCKS = 3  # frontend "resnet": Wang et al.'s ResNet has three


def receptive_field(frontend: str) -> int:
    """Input steps that one output step of the front-end's convolutions reads: 14 for conv (kernels
    8, 5, 3 at stride 1), 40 for resnet (three such blocks; shortcuts read less), 1 for none."""
    blocks = {"none": 0, "conv": 1, "resnet": RESIDUAL_BLOCKS}[frontend]
    return 1 + blocks * sum(k - 1 for k in KERNELS)


class _Collected(Exception):
    """Raised by the layer whose population statistics are being collected, once it has them:
    `population_statistics` ends the forward pass there instead of running the rest of the model."""


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over channels whose batch statistics use valid steps only.

    In training the mean and variance of each channel are taken over every valid (b, t) of the
    batch, so pad steps neither shift them nor count towards them; the running statistics
    (used in eval mode, as in `nn.BatchNorm1d`) are updated from those same numbers. The buffers
    and parameters are exactly `nn.BatchNorm1d`'s, so its state dict loads unchanged.
    Statistics are computed in float32 even under autocast (sums over B*T steps overflow fp16).

    After `sync_batch_statistics(model)` the training statistics are taken over the valid steps of
    every rank's batch together (as `nn.SyncBatchNorm` does, with the gradient flowing back through
    the all-reduce), so data-parallel training normalizes like one process with the global batch.
    Measured on PLAID (11 classes, lengths 100-1344) with 2 workers of batch 16: per-rank
    statistics held test accuracy at 0.65 while one process with batch 32 reached 0.84.
    """

    sync_group: object | None = None  # a process group (or the default one) once synced
    # float64 [count, sum_F..., sum of squares_F...] of the inputs while `population_statistics`
    # collects this layer's; None otherwise
    population: torch.Tensor | None = None

    def forward(self, x_BFT: torch.Tensor, mask_BT: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """Normalize x_BFT (float) per channel; `mask_BT` is True at valid steps (None: all valid).

        Returns y_BFT in x's dtype; pad steps hold affine-shifted garbage the caller zeroes.
        """
        values_BFT = x_BFT.float()
        if self.training or self.running_mean is None:
            weight_B1T = _valid_weights(values_BFT, mask_BT)
            synced = self.training and self.sync_group is not None
            # count and sum in one collective; two passes (mean, then centred squares) keep the
            # variance exact where E[x^2] - mean^2 in float32 would cancel
            count_sum_1F = torch.cat([weight_B1T.sum().view(1), (values_BFT * weight_B1T).sum(dim=(0, 2))])
            if synced:
                count_sum_1F = self._all_reduce(count_sum_1F)
            count, mean_F = count_sum_1F[0], count_sum_1F[1:] / count_sum_1F[0]
            centred_BFT = (values_BFT - mean_F.view(1, -1, 1)) * weight_B1T
            squares_F = centred_BFT.square().sum(dim=(0, 2))
            if synced:
                squares_F = self._all_reduce(squares_F)
            var_F = squares_F / count  # biased, as batch norm normalizes
            if self.training and self.running_mean is not None:
                self._update_running(mean_F.detach(), var_F.detach(), count.detach())
        else:
            if self.population is not None:
                self._collect(values_BFT, mask_BT)
                raise _Collected  # nothing after this layer bears on its statistics
            mean_F, var_F = self.running_mean, self.running_var
        y_BFT = (values_BFT - mean_F.view(1, -1, 1)) * torch.rsqrt(var_F.view(1, -1, 1) + self.eps)
        if self.affine:
            y_BFT = y_BFT * self.weight.view(1, -1, 1) + self.bias.view(1, -1, 1)
        return y_BFT.to(x_BFT.dtype)

    @torch.no_grad()
    def _collect(self, values_BFT: torch.Tensor, mask_BT: torch.Tensor | None) -> None:
        """Add the valid steps' count, per-channel sums and sums of squares to `population`."""
        assert self.population is not None
        values_BFT = values_BFT.double()
        weight_B1T = _valid_weights(values_BFT, mask_BT)
        weighted_BFT = values_BFT * weight_B1T
        self.population += torch.cat([weight_B1T.sum().view(1), weighted_BFT.sum(dim=(0, 2)),
                                      (weighted_BFT * values_BFT).sum(dim=(0, 2))]).to(self.population.device)

    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum over the ranks of the sync group; differentiable (the backward sums the gradients,
        which DDP then averages like every other gradient)."""
        return _AllReduceSum.apply(tensor, self.sync_group)

    @torch.no_grad()
    def _update_running(self, mean_F: torch.Tensor, var_F: torch.Tensor, count: torch.Tensor) -> None:
        """Exponential (or, with momentum None, cumulative) average, with the unbiased variance
        like `nn.BatchNorm1d`; one valid step in the whole batch leaves the variance as it is."""
        assert self.running_mean is not None and self.running_var is not None
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean_F, factor)
        # count stays a tensor: reading it on the host would sync the GPU at every block
        self.running_var.lerp_(var_F * count / (count - 1).clamp(min=1), factor)


def _valid_weights(values_BFT: torch.Tensor, mask_BT: torch.Tensor | None) -> torch.Tensor:
    """1 at valid steps and 0 at pad steps, B x 1 x T in values' dtype (all 1 without a mask)."""
    if mask_BT is None:
        return torch.ones_like(values_BFT[:, :1])
    return mask_BT.unsqueeze(1).to(values_BFT.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over a process group, and the gradient summed back the same way (each rank's statistic
    feeds every rank's loss). torch's own `distributed.nn.functional.all_reduce` does this but is
    deprecated in favour of functional collectives, which have no autograd for all-reduce."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                tensor: torch.Tensor, group: object) -> torch.Tensor:
        ctx.group = group  # type: ignore[attr-defined]
        total = tensor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        total = grad.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)  # type: ignore[attr-defined]
        return total, None


def sync_batch_statistics(model: nn.Module, group: dist.ProcessGroup | None = None) -> int:
    """Make every `MaskedBatchNorm1d` in `model` take its training statistics over all ranks of
    `group` (the default process group unless given); returns how many were switched.

    Call it on every rank, after the process group exists and before training: from then on each
    training forward of those layers is a collective, so every rank must run the same number of
    training forwards (as DDP requires anyway). Eval mode uses the running statistics and never
    communicates. A world of one changes nothing.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return 0
    layers = [m for m in model.modules() if isinstance(m, MaskedBatchNorm1d)]
    for layer in layers:
        layer.sync_group = group if group is not None else dist.group.WORLD
    return len(layers)


@torch.no_grad()
def population_statistics(model: nn.Module, batches: Callable[[], Iterable[Any]],
                          forward: Callable[[nn.Module, Any], Any]) -> int:
    """Set the running statistics of every `MaskedBatchNorm1d` in `model` to the mean and
    variance of its inputs over every valid step of the data, with the model in eval mode.

    Batch norm trains on each batch's statistics and evaluates with running averages of them.
    With small batches of rows whose levels differ, those averages describe no input the layer
    sees in eval mode: the mean is right but the variance lacks the spread between batches, and
    each later layer's statistics were taken after the earlier layers normalized by batch. Here
    the layers are taken in order, one pass over `batches()` each: layer k's statistics come from
    inputs that layers 1..k-1 already normalize with their population statistics, exactly as in
    eval mode. Each pass ends at the layer it measures (what follows it cannot change its inputs),
    so the recurrence and head never run here. The result is what one batch holding all the data
    would use in train mode (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", on precise
    statistics). Measured on a saved PigCVP model (52 classes, 2,000 steps, batches of 8): test
    accuracy 0.120 with the running averages, 0.548 with these.

    `batches()` gives a fresh iterable of batches for each pass; `forward(model, batch)` runs the
    model on one. Returns how many layers were set (0: the model has none, and no pass runs).
    Layers are taken in registration order, which is their order in the forward pass for the
    models here (the conv blocks of a `Frontend`).
    """
    layers = [m for m in model.modules() if isinstance(m, MaskedBatchNorm1d)]
    training = model.training
    model.eval()
    try:
        for layer in layers:
            assert layer.running_mean is not None and layer.running_var is not None
            channels = layer.num_features
            layer.population = torch.zeros(1 + 2 * channels, dtype=torch.float64,
                                           device=layer.running_mean.device)
            for batch in batches():
                with contextlib.suppress(_Collected):  # it ends at the layer: no later one, RNN or head
                    forward(model, batch)
            count, sums = layer.population[0], layer.population[1:]
            layer.population = None
            if count < 2:
                raise ValueError("batch-norm population statistics need at least 2 valid steps; "
                                 f"the data had {int(count)}")
            mean_F = sums[:channels] / count
            var_F = (sums[channels:] / count - mean_F.square()).clamp(min=0.0)
            layer.running_mean.copy_(mean_F)
            layer.running_var.copy_(var_F * count / (count - 1))  # unbiased, as nn.BatchNorm1d keeps it
    finally:
        for layer in layers:
            layer.population = None
        model.train(training)
    return len(layers)


class ConvBlock(nn.Module):
    """Masked Conv1d ("same" padding) -> masked batch norm -> ReLU (unless `activation` is False);
    pad steps zero in and out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 activation: bool = True) -> None:
        super().__init__()
        self.activation = activation
        # No conv bias: the batch norm's shift that follows would cancel it.
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, bias=False)
        # "same" padding, spelled out: for the even kernel torch's padding="same" pads the same
        # (one step more on the right) but warns that it copies the input to do so.
        self.same = ((kernel_size - 1) // 2, kernel_size // 2)
        self.norm = MaskedBatchNorm1d(out_channels)

    def forward(self, x_BCT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        """x_BCT (pad steps any value) -> features_BFT with zeros at pad steps."""
        pad_B1T = ~mask_BT.unsqueeze(1)
        # Zeroed pads look exactly like the conv's own zero padding past a sequence's end, so a
        # valid step near the end sees the same window however long the batch is.
        features_BFT = self.conv(F.pad(x_BCT.masked_fill(pad_B1T, 0.0), self.same))
        normed_BFT = self.norm(features_BFT, mask_BT)
        return (F.relu(normed_BFT) if self.activation else normed_BFT).masked_fill(pad_B1T, 0.0)


class ResidualBlock(nn.Module):
    """One block of Wang et al. 2017's ResNet, masked: three `ConvBlock`s (kernels 8, 5, 3), the
    last without its ReLU, added to a shortcut (the input, through a 1x1 conv where the channel
    count changes, then batch norm), then ReLU; pad steps zero in and out."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        last = len(KERNELS) - 1
        self.convs = nn.ModuleList([ConvBlock(in_channels if i == 0 else out_channels, out_channels, kernel,
                                              activation=i < last) for i, kernel in enumerate(KERNELS)])
        # Registered after the convs: `population_statistics` takes batch norms in registration
        # order, and this one's input (the block's) depends on none of the convs' norms.
        self.shortcut = (nn.Conv1d(in_channels, out_channels, 1, bias=False)
                         if in_channels != out_channels else None)
        self.shortcut_norm = MaskedBatchNorm1d(out_channels)

    def forward(self, x_BCT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
        """x_BCT (zeros at pad steps, as every block leaves them) -> features_BFT, zeros at pad steps."""
        features_BFT = x_BCT
        for conv in self.convs:
            features_BFT = conv(features_BFT, mask_BT)
        shortcut_BFT = x_BCT if self.shortcut is None else self.shortcut(x_BCT)
        shortcut_BFT = self.shortcut_norm(shortcut_BFT, mask_BT)
        return F.relu(features_BFT + shortcut_BFT).masked_fill(~mask_BT.unsqueeze(1), 0.0)


class Frontend(nn.Module):
    """x_BTC, lengths_B -> the RNN's inputs_BSF, their lengths, and the conv summary.

    frontend "conv": three `ConvBlock`s (kernels 8, 5, 3; `channels` each) at full resolution.
    frontend "resnet": three `ResidualBlock`s (nine convolutions, `channels` each) at full
        resolution; about twice the time per step of "conv" on CPU (one GRU layer behind both).
    patch p > 1: the time axis (after the conv blocks, or the raw input with frontend "none") is
    right-padded with zeros to a multiple of p and embedded by a Conv1d with kernel = stride = p
    into `channels`; lengths become ceil(length / p). The last, partial patch of a sequence sees
    zeros after its end, as it would alone.

    `output_size` is the RNN's input size (`channels`, or C with neither); `summary_size` is the
    width of the conv summary (0 without conv blocks).
    """

    def __init__(self, *, input_size: int, frontend: str = "none", channels: int = 64,
                 patch: int = 1) -> None:
        super().__init__()
        check_frontend_args(frontend, channels, patch)
        self.patch = patch
        self.blocks = nn.ModuleList()
        size = input_size
        if frontend == "conv":
            for kernel in KERNELS:
                self.blocks.append(ConvBlock(size, channels, kernel))
                size = channels
        elif frontend == "resnet":
            for _ in range(RESIDUAL_BLOCKS):
                self.blocks.append(ResidualBlock(size, channels))
                size = channels
        self.summary_size = size if self.blocks else 0
        self.embed: nn.Conv1d | None = None
        if patch > 1:
            self.embed = nn.Conv1d(size, channels, kernel_size=patch, stride=patch)
            size = channels
        self.output_size = size

    def output_lengths(self, lengths_B: torch.Tensor) -> torch.Tensor:
        """Valid steps after patching: ceil(lengths_B / patch), same device and dtype."""
        return torch.div(lengths_B + (self.patch - 1), self.patch, rounding_mode="floor")

    def forward(self, x_BTC: torch.Tensor, lengths_B: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Run the front-end on a padded batch.

        Args:
            x_BTC: float inputs, padded after each sequence's end (pad values are ignored).
            lengths_B: valid steps per sequence (>= 1), on any device.

        Returns:
            inputs_BSF: the RNN's inputs, zeros at pad steps (S = T without patching).
            lengths_B: valid steps of inputs_BSF, on x's device.
            summary_BF: masked mean of the last conv block's features over valid steps (the
                FCN's global average pooling), or None without conv blocks.
        """
        lengths_B = lengths_B.to(x_BTC.device)
        mask_BT = lengths_to_mask(lengths_B, x_BTC.shape[1])
        x_BCT = x_BTC.transpose(1, 2).masked_fill(~mask_BT.unsqueeze(1), 0.0)
        summary_BF = None
        for block in self.blocks:
            x_BCT = block(x_BCT, mask_BT)
        if self.blocks:
            summary_BF = x_BCT.sum(dim=2) / lengths_B.unsqueeze(1).to(x_BCT.dtype)
        if self.embed is not None:
            x_BCT = F.pad(x_BCT, (0, -x_BCT.shape[2] % self.patch))  # zeros, like the pads before
            lengths_B = self.output_lengths(lengths_B)
            mask_BT = lengths_to_mask(lengths_B, x_BCT.shape[2] // self.patch)
            # The embedding's bias makes pad patches nonzero: zero them so the RNN gets what
            # RecurrentEncoder promises for pad steps.
            x_BCT = self.embed(x_BCT).masked_fill(~mask_BT.unsqueeze(1), 0.0)
        return x_BCT.transpose(1, 2), lengths_B, summary_BF


def check_frontend_args(frontend: str, channels: int, patch: int) -> None:
    """Raise ValueError naming the config key unless the front-end keywords make a model."""
    if frontend == "auto" or patch == "auto":
        raise ValueError("model.frontend/model.patch 'auto' must be resolved from the dataset before a model "
                         "is built (pipeline.training.budget.resolve)")
    if frontend not in FRONTENDS:
        raise ValueError(f"model.frontend: unknown front-end {frontend!r}; choose one of {list(FRONTENDS)}")
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ValueError(f"model.patch: expected an integer >= 1, got {patch!r}")
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"model.frontend_channels: expected an integer >= 1, got {channels!r}")
