"""Attention and pooling: pad steps get zero weight and never change an output."""

import matplotlib
import numpy as np
import pytest
import torch
from conftest import padded
from matplotlib.figure import Figure

from pipeline.config import ModelConfig
from pipeline.models import Attention, build_model, lengths_to_mask
from pipeline.models.classifier import model_from_args
from pipeline.tasks.plots import attention_heatmap
from pipeline.tracking.plots import close

KINDS = ["additive", "dot", "general"]
# (pooling, attention kind): the kind only matters for attention pooling.
POOLINGS = [("last", "additive"), ("mean", "additive"), ("max", "additive")] + [
    ("attention", k) for k in KINDS]


def _expected_scores(attn, query_BQ, keys_BTK):
    """The textbook score formulas, written out independently of Attention.score."""
    if attn.kind == "dot":
        return torch.einsum("bq,btq->bt", query_BQ, keys_BTK)
    if attn.kind == "general":
        W_QK = attn.key_proj.weight
        return torch.einsum("bq,qk,btk->bt", query_BQ, W_QK, keys_BTK)
    hidden_BTA = torch.tanh(
        (query_BQ @ attn.query_proj.weight.T).unsqueeze(1)
        + keys_BTK @ attn.key_proj.weight.T + attn.key_proj.bias
    )
    return hidden_BTA @ attn.score_proj.weight.squeeze(0)


# ---------------------------------------------------------------------------------------------
# Attention on its own


def test_lengths_to_mask():
    # given lengths over a padded length of 4
    lengths_B = torch.tensor([4, 1, 2])
    # when they become a mask
    mask_BT = lengths_to_mask(lengths_B, 4)
    # then it is True exactly at the valid steps
    assert mask_BT.dtype == torch.bool
    assert mask_BT.tolist() == [[True] * 4, [True, False, False, False], [True, True, False, False]]


@pytest.mark.parametrize("kind,query_size", [("additive", 3), ("dot", 5), ("general", 3)])
def test_pad_steps_get_zero_weight_and_context_is_the_weighted_sum(kind, query_size):
    # given an attention module and keys with huge values in their pad positions
    torch.manual_seed(0)
    attn = Attention(kind, query_size=query_size, key_size=5)
    lengths_B = torch.tensor([7, 3, 1])
    mask_BT = lengths_to_mask(lengths_B, 7)
    query_BQ = torch.randn(3, query_size)
    keys_BTK = torch.randn(3, 7, 5)
    clean_BTK = keys_BTK.masked_fill(~mask_BT.unsqueeze(-1), 0.0)
    keys_BTK[~mask_BT] = 1e30
    # when it attends
    context_BK, weights_BT = attn(query_BQ, keys_BTK, mask_BT)
    # then pad steps get exactly zero weight and each row sums to 1 over its valid steps
    assert weights_BT.shape == (3, 7) and context_BK.shape == (3, 5)
    assert torch.all(weights_BT[~mask_BT] == 0.0)
    torch.testing.assert_close(weights_BT.sum(-1), torch.ones(3))
    assert weights_BT[2, 0] == 1.0  # a single valid step takes all the weight
    # and the weights are the softmax of the textbook scores over the valid steps
    expected_BT = torch.softmax(
        _expected_scores(attn, query_BQ, clean_BTK).masked_fill(~mask_BT, float("-inf")), dim=-1
    )
    torch.testing.assert_close(weights_BT, expected_BT)
    # and the context is the weighted sum of the valid keys, untouched by the huge pad values
    assert torch.isfinite(context_BK).all()
    torch.testing.assert_close(context_BK, torch.einsum("bt,btk->bk", weights_BT, clean_BTK))


@pytest.mark.parametrize("kind", KINDS)
def test_pad_values_do_not_reach_the_gradients(kind):
    # given keys with inf in their pad positions
    torch.manual_seed(0)
    attn = Attention(kind, query_size=4, key_size=4)
    mask_BT = lengths_to_mask(torch.tensor([5, 2]), 5)
    query_BQ = torch.randn(2, 4, requires_grad=True)
    keys_BTK = torch.randn(2, 5, 4)
    keys_BTK[~mask_BT] = float("inf")
    # when the context is backpropagated
    context_BK, _ = attn(query_BQ, keys_BTK, mask_BT)
    context_BK.sum().backward()
    # then every gradient is finite
    assert torch.isfinite(query_BQ.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())


def test_dot_needs_equal_sizes_and_unknown_kind_is_rejected():
    # given / when / then: a mismatched dot product names the config key
    with pytest.raises(ValueError, match=r"model\.attention.*query_size == key_size"):
        Attention("dot", query_size=3, key_size=5)
    with pytest.raises(ValueError, match=r"model\.attention.*'cosine'"):
        Attention("cosine", query_size=3, key_size=3)
    # and the classifier rejects an unknown kind even when it would not use it
    with pytest.raises(ValueError, match=r"model\.attention"):
        model_from_args({"input_size": 2, "num_classes": 2, "attention": "cosine"})
    with pytest.raises(ValueError, match=r"model\.pooling"):
        model_from_args({"input_size": 2, "num_classes": 2, "pooling": "median"})


def test_attention_size_sets_the_additive_width():
    # given an additive module with its own attention size
    attn = Attention("additive", query_size=3, key_size=5, attention_size=7)
    # then both projections map into it, and dot has no parameters at all
    assert attn.query_proj.weight.shape == (7, 3) and attn.key_proj.weight.shape == (7, 5)
    assert attn.score_proj.weight.shape == (1, 7)
    assert list(Attention("dot", 4, 4).parameters()) == []


# ---------------------------------------------------------------------------------------------
# The classifier's pooling and input layer norm


@pytest.mark.parametrize("input_layer_norm", [False, True])
@pytest.mark.parametrize("pooling,attention", POOLINGS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_output_shapes(cell, bidirectional, pooling, attention, input_layer_norm):
    # given a model with this combination of options
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, hidden_size=6, pooling=pooling,
                      attention=attention, input_layer_norm=input_layer_norm)
    model = build_model(cfg, input_size=3, num_classes=4)
    x, lengths = padded([torch.randn(5, 3), torch.randn(2, 3)])
    # when it classifies a batch, with and without the weights
    logits_BK = model(x, lengths)
    logits_again_BK, weights_BT = model(x, lengths, return_attention=True)
    # then the logits are (B, K) and weights come back for attention pooling only
    assert logits_BK.shape == logits_again_BK.shape == (2, 4)
    if pooling == "attention":
        assert weights_BT.shape == (2, 5)
    else:
        assert weights_BT is None
    # and the RNN reads the projected inputs when input_layer_norm is on
    assert model.encoder.rnn.input_size == (6 if input_layer_norm else 3)
    assert (model.encoder.input_norm is not None) == input_layer_norm


@pytest.mark.parametrize("pooling,attention,input_layer_norm,cell,bidirectional", [
    ("mean", "additive", False, "lstm", True),
    ("mean", "additive", False, "gru", False),
    ("max", "additive", False, "gru", True),
    ("attention", "additive", False, "lstm", True),
    ("attention", "dot", False, "gru", True),
    ("attention", "general", False, "rnn", False),
    ("last", "additive", True, "lstm", True),
    ("mean", "additive", True, "gru", True),
    ("attention", "general", True, "lstm", False),
])
def test_padding_does_not_change_logits(pooling, attention, input_layer_norm, cell, bidirectional):
    # given a model and one short sequence
    torch.manual_seed(0)
    cfg = ModelConfig(cell=cell, bidirectional=bidirectional, num_layers=2, hidden_size=16, dropout=0.2,
                      pooling=pooling, attention=attention, input_layer_norm=input_layer_norm)
    model = build_model(cfg, input_size=3, num_classes=4).eval()
    short = torch.randn(5, 3)
    # when it is scored alone and batched with longer sequences (7 pad steps of garbage)
    alone_BK, alone_weights_BT = model(*padded([short]), return_attention=True)
    x, lengths = padded([torch.randn(12, 3), short, torch.randn(9, 3)])
    x[1, 5:] = 1e3
    batched_BK, batched_weights_BT = model(x, lengths, return_attention=True)
    # then its logits (and its attention weights) are the same
    torch.testing.assert_close(batched_BK[1], alone_BK[0], rtol=1e-5, atol=1e-6)
    if pooling == "attention":
        torch.testing.assert_close(batched_weights_BT[1, :5], alone_weights_BT[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attention", KINDS)
def test_returned_weights_are_zero_beyond_each_length(attention):
    # given an attention-pooling model and a batch with padding
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=8, pooling="attention", attention=attention),
                        input_size=2, num_classes=3)
    x, lengths = padded([torch.randn(6, 2), torch.randn(2, 2), torch.randn(4, 2)])
    # when it returns its attention
    logits_BK, weights_BT = model(x, lengths, return_attention=True)
    # then weights are (B, T), exactly zero beyond each length, and sum to 1
    assert weights_BT.shape == (3, 6)
    for b, length in enumerate(lengths.tolist()):
        assert torch.all(weights_BT[b, length:] == 0.0)
        assert torch.all(weights_BT[b, :length] > 0.0)
    torch.testing.assert_close(weights_BT.sum(-1), torch.ones(3))
    # and the learned query is trained through them
    logits_BK.sum().backward()
    assert model.query_H.grad is not None and model.query_H.grad.abs().sum() > 0


def test_mean_pooling_is_the_mean_over_valid_steps():
    # given a mean-pooling model
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=8, pooling="mean"), input_size=2, num_classes=3).eval()
    x, lengths = padded([torch.randn(6, 2), torch.randn(3, 2)])
    # when it classifies
    logits_BK = model(x, lengths)
    # then the head saw the average of the encoder outputs over the valid steps only
    outputs_BTH, _ = model.encoder(x, lengths)
    mean_BH = torch.stack([outputs_BTH[0, :6].mean(0), outputs_BTH[1, :3].mean(0)])
    torch.testing.assert_close(logits_BK, model.head(mean_BH))


def test_max_pooling_is_the_max_over_valid_steps():
    # given a max-pooling model, and a batch whose short row's pad steps hold zeros (a pad step
    # taken for a max would show wherever a feature is negative over all valid steps)
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden_size=8, pooling="max"), input_size=2, num_classes=3).eval()
    x, lengths = padded([torch.randn(6, 2), torch.randn(3, 2)])
    # when it classifies
    logits_BK = model(x, lengths)
    # then the head saw each feature's maximum over the valid steps only
    outputs_BTH, _ = model.encoder(x, lengths)
    max_BH = torch.stack([outputs_BTH[0, :6].amax(0), outputs_BTH[1, :3].amax(0)])
    assert bool((max_BH[1] < 0).any())  # the case where taking pad zeros would differ
    torch.testing.assert_close(logits_BK, model.head(max_BH))


@pytest.mark.parametrize("pooling,attention,input_layer_norm", [
    ("attention", "general", True), ("attention", "additive", False), ("mean", "dot", True),
])
def test_model_args_rebuild_identical_model(pooling, attention, input_layer_norm):
    # given a model built from config with the new options
    torch.manual_seed(1)
    cfg = ModelConfig(cell="gru", hidden_size=8, bidirectional=True, pooling=pooling,
                      attention=attention, input_layer_norm=input_layer_norm)
    model = build_model(cfg, input_size=3, num_classes=2).eval()
    assert {k: model.model_args[k] for k in ("pooling", "attention", "input_layer_norm")} == {
        "pooling": pooling, "attention": attention, "input_layer_norm": input_layer_norm,
    }
    # when a checkpoint rebuilds it from model_args and loads its weights (strictly)
    clone = model_from_args(model.model_args).eval()
    clone.load_state_dict(model.state_dict())
    # then the clone has the same structure and gives the same outputs
    assert clone.model_args == model.model_args
    x, lengths = padded([torch.randn(6, 3), torch.randn(4, 3)])
    torch.testing.assert_close(clone(x, lengths, return_attention=True)[0], model(x, lengths))


# ---------------------------------------------------------------------------------------------
# The figure


def test_attention_heatmap_saves_to_png(tmp_path):
    # given the weights of two examples of different lengths
    weights_list = [np.array([0.1, 0.6, 0.3]), np.full(20, 0.05, dtype=np.float32)]
    # when they are drawn
    fig = attention_heatmap(weights_list, ["class a", "class b"])
    # then it is a figure with one heatmap row per example, and it saves as a PNG
    assert isinstance(fig, Figure)
    assert matplotlib.get_backend().lower() == "agg"
    heatmaps = [ax for ax in fig.axes if ax.images and ax.get_title(loc="left")]
    assert [ax.get_title(loc="left") for ax in heatmaps] == ["class a", "class b"]
    assert [ax.images[0].get_array().shape for ax in heatmaps] == [(1, 3), (1, 20)]
    path = tmp_path / "attention.png"
    fig.savefig(path)
    close(fig)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and a title per example is required
    with pytest.raises(ValueError, match="one title per example"):
        attention_heatmap(weights_list, ["only one"])
