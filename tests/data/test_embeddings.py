"""Pretrained word vectors read for a vocabulary (GloVe and word2vec text formats)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from pipeline.data.dataset import SPECIALS, DatasetError
from pipeline.data.embeddings import read_word_vectors, vector_width

VOCAB = [*SPECIALS, "good", "Film", "bad", "zzz"]


def test_glove_text_gives_the_vocabulary_words_their_vectors_and_marks_the_others(tmp_path):
    # given a GloVe-format file (word, then 3 numbers) holding two of the words, one only lowercased
    path = tmp_path / "glove.3d.txt"
    path.write_text("the 0.1 0.2 0.3\ngood 1 2 3\nfilm -1 -2 -3.5\nFilm 7 8 9\nbad 4 5 6e-1\n")
    # when it is read for the vocabulary
    vectors = read_word_vectors(str(path), VOCAB)
    # then found words have their vectors (the word as the vocabulary has it wins over its
    # lowercase form, whichever comes first), the specials and unknown words are 0 and not found
    good, film, bad, unknown = (len(SPECIALS) + k for k in range(4))
    assert vectors.dimensions == 3 and vectors.vectors.dtype == np.float32
    np.testing.assert_array_equal(vectors.vectors[good], [1, 2, 3])
    np.testing.assert_array_equal(vectors.vectors[film], [7, 8, 9])
    np.testing.assert_allclose(vectors.vectors[bad], [4, 5, 0.6])
    assert vectors.found.tolist() == [False] * len(SPECIALS) + [True, True, True, False]
    assert not vectors.vectors[unknown].any() and vectors.words_found == 3
    assert vectors.describe().startswith("3 of 4 vocabulary words found in")


def test_a_lowercase_form_is_used_when_the_word_itself_is_missing(tmp_path):
    path = tmp_path / "lower.txt"
    path.write_text("film 1 1\n")
    vectors = read_word_vectors(str(path), VOCAB)
    np.testing.assert_array_equal(vectors.vectors[len(SPECIALS) + 1], [1, 1])


def test_word2vec_header_and_gzip_are_read(tmp_path):
    # given a word2vec/fastText .vec (a "count dimensions" first line), gzipped
    path = tmp_path / "vectors.vec.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write("2 2\nbad 0.5 -0.5\nzzz 1.0 2.0\n")
    vectors = read_word_vectors(str(path), VOCAB)
    assert vectors.dimensions == 2 and vectors.words_found == 2 and vector_width(str(path)) == 2
    np.testing.assert_array_equal(vectors.vectors[len(SPECIALS) + 3], [1.0, 2.0])


@pytest.mark.parametrize("line", ["good 1 2\n", "good 1 two 3\n"])
def test_a_vector_line_of_the_wrong_shape_names_file_and_line(tmp_path, line):
    path = tmp_path / "bad.txt"
    path.write_text("the 1 2 3\n" + line)
    with pytest.raises(DatasetError, match=r"bad\.txt, line 2: expected the word 'good' and 3 numbers"):
        read_word_vectors(str(path), VOCAB)


def test_a_file_that_is_not_word_vectors_is_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DatasetError, match="no word vectors in it"):
        read_word_vectors(str(empty), VOCAB)
    with pytest.raises(DatasetError, match="no word vectors in it"):
        vector_width(str(empty))
    binary = tmp_path / "vectors.bin"
    binary.write_bytes(b"good \xff\xfe\x00\x01\n")
    with pytest.raises(DatasetError, match="not UTF-8 text"):
        read_word_vectors(str(binary), VOCAB)
    with pytest.raises(FileNotFoundError, match="model.embeddings: no file"):
        read_word_vectors(str(tmp_path / "missing.txt"), VOCAB)
