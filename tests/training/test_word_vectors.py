"""model.embeddings as the trainer reads it: which tasks take word vectors, and their width."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, RecurConfig
from pipeline.data.dataset import SPECIALS
from pipeline.data.preprocess import Preprocessing
from pipeline.training.trainer import word_vectors_for

TEXT = Preprocessing(mean=[], std=[], labels=["neg", "pos"], feature_kind="token",
                     vocab=[*SPECIALS, "good", "bad"])


def config(task: str = "classify", **model) -> RecurConfig:
    return RecurConfig(data={"task": task}, model=model)


def test_text_classification_and_tagging_read_the_vectors_for_their_vocabulary(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("bad 1 2\n")
    assert word_vectors_for(config(), TEXT) is None  # no model.embeddings: nothing read
    for task in ("classify", "tag"):
        vectors = word_vectors_for(config(task, embeddings=str(path)), TEXT)
        assert vectors.words_found == 1 and vectors.dimensions == 2
    # the vectors' width is the embedding's, whatever embedding_size (for learned ones) says
    assert word_vectors_for(config(embeddings=str(path), embedding_size=16), TEXT).dimensions == 2


def test_vectors_are_refused_where_the_inputs_are_no_words(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("bad 1 2\n")
    floats = Preprocessing(mean=[0.0], std=[1.0], labels=["a", "b"])
    with pytest.raises(ConfigError, match="model.embeddings: .* task 'classify' with float inputs"):
        word_vectors_for(config(embeddings=str(path)), floats)
    with pytest.raises(ConfigError, match="task 'lm'"):
        word_vectors_for(config("lm", embeddings=str(path)), TEXT)
