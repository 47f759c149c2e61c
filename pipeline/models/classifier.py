"""Sequence classification: an optional conv/patch front-end, a recurrent encoder, a pooling over
its steps, and a linear head.

Shape suffixes: B batch, T time steps (padded), C input channels, S encoder steps (T, or
ceil(T / patch) with patching), H encoder output size (hidden * directions), F front-end channels,
K classes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.models.attention import KINDS as ATTENTION_KINDS
from pipeline.models.attention import Attention, lengths_to_mask
from pipeline.models.frontend import Frontend, check_frontend_args
from pipeline.models.instance import instance_normalize, raw_view, raw_view_affine, row_normalize
from pipeline.models.recurrent import RecurrentEncoder

POOLINGS = ("last", "mean", "max", "attention")
INSTANCE_STATS = ("dataset", "row")  # see `instance_norm` in SequenceClassifier's doc
BRANCH_DROPOUT = 0.8  # model.branch_dropout auto beside a conv front-end: LSTM-FCN's (Karim et al. 2018)


def auto_branch_dropout(frontend: str) -> float:
    """model.branch_dropout auto: `BRANCH_DROPOUT` beside a conv front-end (conv or resnet), 0
    without one."""
    return 0.0 if frontend == "none" else BRANCH_DROPOUT


class SequenceClassifier(nn.Module):
    """x_BTC, lengths_B -> logits_BK over K classes.

    pooling (how the encoder's steps become one vector per sequence):
        last: the top layer's final state (both directions when bidirectional).
        mean: the mean of the per-step outputs over valid steps.
        max: the per-feature maximum of the per-step outputs over valid steps (on short texts a
            few decisive words then reach the head undiluted by the rest).
        attention: attention over valid steps with a learned query (kind: `attention`).

    front-end (`Frontend`; none by default, which is exactly the model without one):
        frontend "conv": three masked conv blocks (kernels 8, 5, 3, `frontend_channels` each)
            feed the encoder, LSTM-FCN style, and the masked mean of their features over valid
            steps is concatenated to the pooled state before the head (H + F inputs).
        frontend "resnet": the same with three residual blocks of three conv blocks each (Wang et
            al. 2017's ResNet, `frontend_channels` wide) in place of the three conv blocks.
        patch p > 1: every p steps (after the conv blocks, or of the raw input) merge into one
            by a strided conv, so the encoder runs ceil(T / p) steps; `last`, `mean` and
            `attention` pool those steps, and attention weights are over them, not over input
            steps (`encoder_lengths` maps input lengths to theirs).
        branch_dropout: with conv blocks, dropout on the pooled recurrent state (in training) before
            it joins the conv summary, as LSTM-FCN drops 80% of its LSTM block's output (Karim et
            al. 2018), so the head cannot lean on the recurrent features alone. Measured with 0.8
            (docs/measured-results.md): OSULeaf 0.839 -> 0.909, whose rows the hybrid fits by
            heart; PigCVP 0.630 -> 0.707 once `train.max_epochs` let it train until fit (0.361 in
            100 epochs). 0 by default, 0.8 beside conv blocks under `auto` (configs/classify.yaml);
            recorded in `model_args` only when set.

    vocab_size > 0: the inputs are token ids (x_BT int64, 0 = padding; a text classifier),
        looked up in an embedding of `embedding_size` (default `hidden_size`) in front of the same
        encoder and pooling; `input_size` is then ignored, and front-ends and instance_norm
        (which act on float channels) are refused. `dropout` then also drops embedding features
        in training (a small labelled set otherwise lets each word's vector fit its few texts).

    instance_norm: each sequence is first centred and scaled per channel by its own mean and std
        over its valid steps (`pipeline.models.instance`), so rows whose scales differ by orders
        of magnitude all reach the encoder on one scale; the scale itself is not lost: statistics
        of each channel join the head's inputs. `instance_stats` says which:
        "row" (what `build_model` makes): `row_normalize`, the std floored at a fraction of the
        row's own largest value, the head given the mean, log std and asinh(mean / std)
        (H (+ F) + 3C inputs);
        "dataset" (the default, so checkpoints written before "row" rebuild as they were
        trained): `instance_normalize`, the std floored at a thousandth of the dataset's scale,
        the head given the mean and log std (H (+ F) + 2C).
        Measured on PLAID (rows' scales five orders of magnitude apart, 45% of its rows under that
        thousandth): test accuracy 0.84-0.87 with "dataset", 0.90-0.905 with "row"
        (docs/measured-results.md).

    raw_view_gain, raw_view_bias (per channel; `pipeline.models.instance.raw_view_affine` from the
        train split's mean, std and 10th-percentile row std): the encoder (the front-end, when there
        is one) also gets each channel's raw values on one signed log scale for all rows,
        asinh(raw / p10), beside the row-normalized channels (2C input channels). Row
        normalization shows every row's shape at one scale, so a quiet row's noise looks like a
        loud row's waveform; the raw view keeps what 1-NN distances on raw values see: quiet rows
        at their own level and shape, loud rows compressed. Measured on PLAID (row scales five
        orders of magnitude apart), three seeds: 0.909 -> 0.942 (docs/measured-results.md).
        `model.raw_view` (auto: with `instance_norm` in classification).

    `model_args` holds exactly the constructor keywords, so a checkpoint can rebuild the model.
    """

    def __init__(
        self,
        *,
        input_size: int,
        num_classes: int,
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
        instance_stats: str = "dataset",
        branch_dropout: float = 0.0,
        vocab_size: int = 0,
        embedding_size: int | None = None,
        raw_view_gain: list[float] | None = None,
        raw_view_bias: list[float] | None = None,
    ) -> None:
        super().__init__()
        check_frontend_args(frontend, frontend_channels, patch)
        if vocab_size > 0 and (frontend != "none" or patch > 1 or instance_norm):
            raise ValueError("token inputs (a text classifier) take no model.frontend, model.patch or "
                             "model.instance_norm: those act on float channels; set them to none, 1, false")
        if instance_stats not in INSTANCE_STATS:
            raise ValueError(f"instance_stats: unknown {instance_stats!r}; "
                             f"choose one of {list(INSTANCE_STATS)}")
        if (raw_view_gain is None) != (raw_view_bias is None) or (
                raw_view_gain is not None and not len(raw_view_gain) == len(raw_view_bias) == input_size):
            raise ValueError(f"raw_view_gain and raw_view_bias: one value per input channel each "
                             f"({input_size}), or neither")
        if raw_view_gain is not None and vocab_size > 0:
            raise ValueError("token inputs (a text classifier) take no model.raw_view: it views float "
                             "channels; set it to false")
        if not 0.0 <= branch_dropout < 1.0:
            raise ValueError(f"model.branch_dropout: expected a probability in [0, 1), "
                             f"got {branch_dropout!r}")
        if branch_dropout and frontend == "none":
            raise ValueError("model.branch_dropout drops the recurrent state beside a conv front-end's "
                             "summary; it needs model.frontend conv or resnet (use model.dropout otherwise)")
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling: unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
        # Checked even when pooling is not attention, so a typo in the config never sits unnoticed.
        if attention not in ATTENTION_KINDS:
            raise ValueError(
                f"model.attention: unknown kind {attention!r}; choose one of {list(ATTENTION_KINDS)}"
            )
        encoder_args: dict[str, Any] = dict(
            input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, cell=cell,
            nonlinearity=nonlinearity, bidirectional=bidirectional, dropout=dropout,
            input_layer_norm=input_layer_norm,
        )
        self.model_args = {**encoder_args, "num_classes": num_classes, "pooling": pooling,
                           "attention": attention, "frontend": frontend,
                           "frontend_channels": frontend_channels, "patch": patch,
                           "instance_norm": instance_norm}
        if instance_norm:  # only then, so checkpoints without instance norm keep their arguments
            self.model_args["instance_stats"] = instance_stats
        if branch_dropout:  # only then, so checkpoints written before it keep their arguments
            self.model_args["branch_dropout"] = branch_dropout
        self.raw_view = raw_view_gain is not None
        if self.raw_view:  # only then, so checkpoints written before it keep their arguments
            self.model_args.update(raw_view_gain=list(raw_view_gain), raw_view_bias=list(raw_view_bias))
            # buffers that move with the model, not state: model_args rebuilds them
            self.register_buffer("raw_view_gain_C", torch.tensor(raw_view_gain, dtype=torch.float32),
                                 persistent=False)
            self.register_buffer("raw_view_bias_C", torch.tensor(raw_view_bias, dtype=torch.float32),
                                 persistent=False)
            # the row-normalized (or dataset-scaled) channels, then the raw view's
            encoder_args["input_size"] = 2 * input_size
        if vocab_size > 0:  # only then, so checkpoints of float models keep their arguments
            encoder_args.update(vocab_size=vocab_size, embedding_size=embedding_size)
            self.model_args.update(vocab_size=vocab_size, embedding_size=embedding_size)
        self.pooling = pooling
        self.patch = patch
        # None (no module, no state-dict keys) keeps checkpoints saved before front-ends loading.
        self.frontend: Frontend | None = None
        if frontend != "none" or patch > 1:
            self.frontend = Frontend(input_size=encoder_args["input_size"], frontend=frontend,
                                     channels=frontend_channels, patch=patch)
            encoder_args["input_size"] = self.frontend.output_size
        self.encoder = RecurrentEncoder(**encoder_args, embedding_dropout=dropout if vocab_size > 0 else 0.0)
        size = self.encoder.output_size
        self.attention: Attention | None = None
        if pooling == "attention":
            # The query is the same for every sequence: "which steps matter for the class".
            # Scaled like a default Linear row so initial scores are O(1) for every kind.
            self.query_H = nn.Parameter(torch.randn(size) / size**0.5)
            self.attention = Attention(attention, query_size=size, key_size=size)
        self.dropout = nn.Dropout(dropout)
        self.branch_dropout = nn.Dropout(branch_dropout)
        summary_size = 0 if self.frontend is None else self.frontend.summary_size
        self.instance_norm = instance_norm
        self.instance_stats = instance_stats
        scale_size = (3 if instance_stats == "row" else 2) * input_size if instance_norm else 0
        self.head = nn.Linear(size + summary_size + scale_size, num_classes)

    def encoder_lengths(self, lengths_B: torch.Tensor) -> torch.Tensor:
        """Steps the encoder (and attention pooling) sees per sequence: ceil(lengths_B / patch)."""
        return lengths_B if self.frontend is None else self.frontend.output_lengths(lengths_B)

    def forward(
        self, x_BTC: torch.Tensor, lengths_B: torch.Tensor, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """Classify a padded batch.

        Args:
            x_BTC: float inputs, padded after each sequence's end (x_BT int64 token ids, 0 after
                each sequence's end, when the model has a vocabulary).
            lengths_B: valid steps per sequence (>= 1), on any device.
            return_attention: also return the pooling weights.

        Returns:
            logits_BK, or (logits_BK, weights_BS) with `return_attention`: weights_BS are the
            attention weights over the encoder's steps (S = ceil(T / patch); 0 beyond each
            sequence's `encoder_lengths`, rows sum to 1), None unless pooling is attention.
        """
        summary_BF = scale_BS = raw_BTC = None
        if self.raw_view:  # of the inputs as they come, before any normalization
            raw_BTC = raw_view(x_BTC, lengths_B, self.raw_view_gain_C, self.raw_view_bias_C)
        if self.instance_norm:
            if self.instance_stats == "row":
                x_BTC, scale_BS = row_normalize(x_BTC, lengths_B)
            else:
                x_BTC, mean_B1C, std_B1C = instance_normalize(x_BTC, lengths_B)
                scale_BS = torch.cat([mean_B1C[:, 0], std_B1C[:, 0].log()], dim=1)
        if raw_BTC is not None:
            x_BTC = torch.cat([x_BTC, raw_BTC], dim=2)
        if self.frontend is not None:
            x_BTC, lengths_B, summary_BF = self.frontend(x_BTC, lengths_B)
        outputs_BTH, last_BH = self.encoder(x_BTC, lengths_B)
        weights_BT = None
        if self.pooling == "last":
            pooled_BH = last_BH
        else:
            lengths_B = lengths_B.to(outputs_BTH.device)
            mask_BT = lengths_to_mask(lengths_B, outputs_BTH.shape[1])
            if self.pooling == "max":  # pad steps never win: they are -inf here
                pooled_BH = outputs_BTH.masked_fill(~mask_BT.unsqueeze(-1), float("-inf")).amax(dim=1)
            elif self.attention is None:  # mean
                # The encoder already zeroes pad steps; masking again keeps this right on its own.
                summed_BH = outputs_BTH.masked_fill(~mask_BT.unsqueeze(-1), 0.0).sum(dim=1)
                pooled_BH = summed_BH / lengths_B.unsqueeze(1).to(summed_BH.dtype)
            else:
                query_BH = self.query_H.unsqueeze(0).expand(outputs_BTH.shape[0], -1)
                pooled_BH, weights_BT = self.attention(query_BH, outputs_BTH, mask_BT)
        if summary_BF is not None:  # LSTM-FCN: the conv path's global average pool beside the RNN's
            pooled_BH = torch.cat([self.branch_dropout(pooled_BH), summary_BF.to(pooled_BH.dtype)], dim=1)
        if scale_BS is not None:  # what the instance normalization took away: level and scale
            pooled_BH = torch.cat([pooled_BH, scale_BS.to(pooled_BH.dtype)], dim=1)
        logits_BK = self.head(self.dropout(pooled_BH))
        return (logits_BK, weights_BT) if return_attention else logits_BK


def auto_raw_view(instance_norm: bool | str) -> bool:
    """model.raw_view auto: on exactly where the rows are normalized each by itself."""
    return instance_norm is True


def build_model(model_cfg: Any, *, input_size: int, num_classes: int,
                pre: Any = None) -> SequenceClassifier:
    """Build from a `ModelConfig` and the dataset's shape; `pre` (`Preprocessing`) gives the raw
    view its scale when `model.raw_view` is on."""
    branch_dropout = model_cfg.branch_dropout
    if branch_dropout == "auto":  # resolved by pipeline.training.budget before a run; the same here
        branch_dropout = auto_branch_dropout(model_cfg.frontend)
    on = model_cfg.raw_view
    if on == "auto":  # resolved by pipeline.training.budget before a run; the same here
        on = auto_raw_view(model_cfg.instance_norm) and bool(pre is not None and pre.row_std_p10)
    gain = bias = None
    if on:
        if pre is None or not pre.row_std_p10:
            raise ValueError("model.raw_view needs the train rows' 10th-percentile std from the dataset's "
                             "manifest (normalization.row_std_p10), which datasets imported before it was "
                             "kept lack: import the dataset again, or set model.raw_view false")
        gain, bias = raw_view_affine(pre.mean, pre.std, pre.row_std_p10)
    return SequenceClassifier(input_size=input_size, num_classes=num_classes, **model_cfg.encoder_args(),
                              pooling=model_cfg.pooling, attention=model_cfg.attention,
                              **model_cfg.frontend_args(), instance_norm=model_cfg.instance_norm is True,
                              instance_stats="row", branch_dropout=branch_dropout,
                              raw_view_gain=gain, raw_view_bias=bias)


def model_from_args(model_args: dict[str, Any]) -> SequenceClassifier:
    """Rebuild from the `model_args` a checkpoint stored."""
    return SequenceClassifier(**model_args)
