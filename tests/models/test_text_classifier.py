"""The classifier on token ids (texts): an embedding in front of the same encoders and poolings."""

import pytest
import torch

from pipeline.models import CELLS
from pipeline.models.classifier import SequenceClassifier, model_from_args


def tokens(rows):
    """Lists of token ids -> x_BT (0-padded) and lengths_B."""
    lengths = torch.tensor([len(r) for r in rows])
    x = torch.zeros(len(rows), int(lengths.max()), dtype=torch.int64)
    for i, r in enumerate(rows):
        x[i, : len(r)] = torch.tensor(r)
    return x, lengths


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pooling,attention", [("last", "additive"), ("mean", "additive"),
                                               ("max", "additive"), ("attention", "additive"),
                                               ("attention", "dot"),
                                               ("attention", "general")])
def test_token_classifier_shapes_and_padding_invariance(cell, bidirectional, pooling, attention):
    # given a text classifier over a 20-token vocabulary
    torch.manual_seed(0)
    model = SequenceClassifier(input_size=1, num_classes=3, hidden_size=6, num_layers=2, cell=cell,
                               bidirectional=bidirectional, pooling=pooling, attention=attention,
                               dropout=0.2, vocab_size=20, embedding_size=5).eval()
    assert model.encoder.rnn.input_size == 5 and model.encoder.embedding.num_embeddings == 20
    short = [4, 5, 6]
    # when the short text is scored alone and beside longer ones (4 pad steps, and pad ids that
    # are not 0: only the lengths say where a text ends)
    alone, weights_alone = model(*tokens([short]), return_attention=True)
    x, lengths = tokens([[7, 8, 9, 10, 11, 12, 13], short, [1, 2]])
    x[1, 3:] = 19
    logits, weights = model(x, lengths, return_attention=True)
    # then the logits are (B, K) and the short text's are unchanged
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits[1], alone[0], rtol=1e-5, atol=1e-6)
    if pooling == "attention":
        assert weights.shape == (3, 7) and torch.all(weights[1, 3:] == 0)
        torch.testing.assert_close(weights[1, :3], weights_alone[0])
        assert torch.allclose(weights.sum(1), torch.ones(3))
    else:
        assert weights is None


def test_token_model_args_rebuild_it_and_float_only_options_are_refused():
    torch.manual_seed(1)
    model = SequenceClassifier(input_size=1, num_classes=2, hidden_size=4, vocab_size=9, pooling="mean")
    clone = model_from_args(model.model_args)
    clone.load_state_dict(model.state_dict())
    x, lengths = tokens([[1, 2, 3], [4]])
    torch.testing.assert_close(clone.eval()(x, lengths), model.eval()(x, lengths))
    assert model.encoder.rnn.input_size == 4  # embedding_size defaults to hidden_size
    for option in ({"frontend": "conv"}, {"patch": 2}, {"instance_norm": True}):
        with pytest.raises(ValueError, match="token inputs"):
            SequenceClassifier(input_size=1, num_classes=2, vocab_size=9, **option)


def test_dropout_drops_embedding_features_in_training_only():
    # given a text classifier with dropout, and a float classifier with the same dropout
    torch.manual_seed(2)
    model = SequenceClassifier(input_size=1, num_classes=2, hidden_size=4, vocab_size=9, dropout=0.5)
    floats = SequenceClassifier(input_size=3, num_classes=2, hidden_size=4, dropout=0.5)
    x, _ = tokens([[1, 2, 3, 4, 5, 6, 7, 8]])
    # when its tokens are embedded in training, then about half the features are zeroed
    embedded = model.encoder.embed(x)
    assert 0.2 < float((embedded == 0).float().mean()) < 0.8
    # and in evaluation they are the embedding's own vectors
    torch.testing.assert_close(model.eval().encoder.embed(x), model.encoder.embedding(x))
    # and float inputs are not dropped (no embedding to drop from)
    steps = torch.randn(1, 5, 3)
    torch.testing.assert_close(floats.train().encoder.embed(steps), steps)


def test_an_embedding_starts_from_found_vectors_and_unknown_words_on_their_scale():
    import numpy as np

    from pipeline.models.recurrent import start_from_vectors

    # given a text classifier over 9 tokens and 100-wide vectors for 5 of them (std 0.5)
    torch.manual_seed(5)
    model = SequenceClassifier(input_size=1, num_classes=2, hidden_size=4, vocab_size=9, embedding_size=100)
    rng = np.random.default_rng(0)
    vectors = rng.normal(0, 0.5, (9, 100)).astype(np.float32)
    found = np.array([False, False, False, False, True, True, True, True, True])
    embedding = model.encoder.embedding
    # when the embedding starts from them
    start_from_vectors(embedding, vectors, found)
    weight = embedding.weight.detach()
    # then found rows are the vectors, padding stays 0, the other rows are redrawn on their scale
    torch.testing.assert_close(weight[4:], torch.from_numpy(vectors[4:]))
    assert not weight[0].any() and embedding.weight.requires_grad
    assert 0.35 < float(weight[1:4].std()) < 0.65
    # and frozen, the table takes no gradient; a table of another shape is refused
    start_from_vectors(embedding, vectors, found, freeze=True)
    assert not embedding.weight.requires_grad
    with pytest.raises(ValueError, match="shape"):
        start_from_vectors(embedding, vectors[:, :50], found)
