"""Models: padding never changes an output; every cell builds through the one table."""

import pytest
import torch
from conftest import padded

from pipeline.config import ModelConfig
from pipeline.models import CELLS, build_model


@pytest.mark.parametrize("cell,bidirectional,num_layers", [
    ("lstm", False, 1), ("lstm", True, 2), ("gru", True, 1), ("gru", False, 2), ("rnn", True, 2),
])
def test_padding_does_not_change_logits(cell, bidirectional, num_layers):
    # given a model and one short sequence
    torch.manual_seed(0)
    model = build_model(ModelConfig(cell=cell, bidirectional=bidirectional, num_layers=num_layers,
                                    hidden_size=16, dropout=0.2), input_size=3, num_classes=4).eval()
    short = torch.randn(5, 3)
    longer = [torch.randn(12, 3), torch.randn(9, 3)]
    # when it is scored alone and batched with longer sequences (so it gets 7 pad steps),
    # with garbage in the pad steps too
    alone = model(*padded([short]))
    x, lengths = padded([longer[0], short, longer[1]])
    x[1, 5:] = 1e3
    batched = model(x, lengths)
    # then its logits are the same
    torch.testing.assert_close(batched[1], alone[0], rtol=1e-5, atol=1e-6)


def test_relu_rnn_and_shapes():
    model = build_model(ModelConfig(cell="rnn", nonlinearity="relu", hidden_size=8),
                        input_size=2, num_classes=5)
    assert model.encoder.rnn.nonlinearity == "relu"
    assert model.encoder.rnn.batch_first
    x, lengths = padded([torch.randn(4, 2), torch.randn(2, 2)])
    assert model(x, lengths).shape == (2, 5)


def test_cells_table_covers_config_choices():
    assert set(CELLS) == {"lstm", "gru", "rnn"}
    assert CELLS["gru"] is torch.nn.GRU


def test_model_args_rebuild_identical_model():
    from pipeline.models.classifier import model_from_args

    torch.manual_seed(1)
    model = build_model(ModelConfig(cell="lstm", hidden_size=8, num_layers=2), input_size=3, num_classes=2)
    clone = model_from_args(model.model_args)
    clone.load_state_dict(model.state_dict())
    x, lengths = padded([torch.randn(6, 3)])
    torch.testing.assert_close(clone.eval()(x, lengths), model.eval()(x, lengths))


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling,attention", [("last", "additive"), ("mean", "additive"),
                                               ("attention", "additive"), ("attention", "dot"),
                                               ("attention", "general")])
@pytest.mark.parametrize("frontend,patch", [("none", 1), ("conv", 1), ("none", 4), ("conv", 4), ("resnet", 1),
                                            ("resnet", 4)])
def test_classifier_shapes_for_every_combination(cell, bidirectional, pooling, attention, frontend, patch):
    model = build_model(ModelConfig(cell=cell, bidirectional=bidirectional, num_layers=2, hidden_size=6,
                                    pooling=pooling, attention=attention, frontend=frontend,
                                    frontend_channels=4, patch=patch), input_size=3, num_classes=5)
    x, lengths = padded([torch.randn(7, 3), torch.randn(2, 3), torch.randn(4, 3)])
    logits, weights = model(x, lengths, return_attention=True)
    assert logits.shape == (3, 5)
    # the RNN's input is the front-end's width; the head also gets the conv summary with conv
    assert model.encoder.rnn.input_size == (3 if (frontend, patch) == ("none", 1) else 4)
    assert model.head.in_features == 6 * (2 if bidirectional else 1) + (4 if frontend != "none" else 0)
    if pooling == "attention":
        # over the encoder's steps: ceil(7 / patch) of them; the 2-step row has 1 step with patch 4
        steps = 7 if patch == 1 else 2
        assert weights.shape == (3, steps)
        assert torch.all(weights[1, 2 if patch == 1 else 1:] == 0)
        assert torch.allclose(weights.sum(1), torch.ones(3))
    else:
        assert weights is None


def test_token_inputs_are_embedded_with_padding_id_zero():
    from pipeline.models.recurrent import RecurrentEncoder

    encoder = RecurrentEncoder(input_size=0, hidden_size=4, vocab_size=10, embedding_size=3, cell="gru")
    x_BT = torch.tensor([[5, 6, 0, 0], [7, 8, 9, 1]])
    outputs_BTH, last_BH = encoder(x_BT, torch.tensor([2, 4]))
    assert outputs_BTH.shape == (2, 4, 4) and last_BH.shape == (2, 4)
    assert torch.all(outputs_BTH[0, 2:] == 0)  # pad steps stay zero
    assert torch.all(encoder.embedding.weight[0] == 0)  # the padding row is not learned


@pytest.mark.parametrize("cell,bidirectional", [("lstm", True), ("gru", False)])
def test_a_batch_without_padding_runs_unpacked_with_the_packed_result(cell, bidirectional):
    # given a batch whose sequences all fill the padded length, when the encoder runs it (it then
    # skips packing), then outputs and final state equal the packed computation's
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from pipeline.models import RecurrentEncoder

    torch.manual_seed(0)
    encoder = RecurrentEncoder(input_size=3, hidden_size=8, num_layers=2, cell=cell,
                               bidirectional=bidirectional)
    x = torch.randn(4, 6, 3)
    lengths = torch.full((4,), 6)
    outputs, final = encoder.run(x, lengths)
    packed_out, packed_final = encoder.rnn(pack_padded_sequence(x, lengths, batch_first=True))
    expected, _ = pad_packed_sequence(packed_out, batch_first=True)
    torch.testing.assert_close(outputs, expected)
    for a, b in zip(final if isinstance(final, tuple) else (final,),
                    packed_final if isinstance(packed_final, tuple) else (packed_final,), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cell,bidirectional,num_layers,nonlinearity", [
    ("lstm", False, 2, "tanh"), ("lstm", True, 2, "tanh"), ("gru", True, 3, "tanh"),
    ("gru", False, 1, "tanh"), ("rnn", True, 2, "relu"), ("rnn", False, 1, "tanh"),
])
def test_a_little_padding_runs_padded_with_the_packed_result_and_gradients(cell, bidirectional, num_layers,
                                                                           nonlinearity):
    # given a batch with some padding (garbage in the pad steps) and the same encoder twice
    from pipeline.models import RecurrentEncoder

    torch.manual_seed(0)
    encoder = RecurrentEncoder(input_size=3, hidden_size=8, num_layers=num_layers, cell=cell,
                               nonlinearity=nonlinearity, bidirectional=bidirectional, input_layer_norm=True)
    x = torch.randn(5, 7, 3)
    lengths = torch.tensor([7, 5, 6, 7, 1])
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = 1e3

    def encode(padded_up_to):
        encoder.zero_grad()
        encoder.padded_up_to = padded_up_to
        outputs, last = encoder(x, lengths)
        (outputs.square().sum() + last.sin().sum()).backward()
        return outputs, last, [p.grad.clone() for p in encoder.parameters()]

    # when it runs padded (its 9 pad steps of 35 are under the limit) and forced to pack
    padded_outputs, padded_last, padded_grads = encode(0.5)
    packed_outputs, packed_last, packed_grads = encode(0.0)
    # then outputs (zeros at pad steps), final states and every gradient agree
    torch.testing.assert_close(padded_outputs, packed_outputs, rtol=1e-5, atol=1e-6)
    assert torch.all(padded_outputs[4, 1:] == 0)
    torch.testing.assert_close(padded_last, packed_last, rtol=1e-5, atol=1e-6)
    for a, b in zip(padded_grads, packed_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
