"""Tests for the UCR/UEA .ts parser: shipped data, hand-made files, missing values, errors."""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources

import numpy as np
import pytest

from pipeline.data.importers.ts_format import TsFormatError, fill_missing, parse_ts

JV = resources.files("pipeline.data") / "builtin" / "JapaneseVowels"


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


HEADER_MULTI = """\
# a comment
@problemName Tiny
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b
@data
"""


def test_japanese_vowels_train_parses_to_270_cases_of_12_channels():
    # Given the shipped training file
    # When it is parsed
    data = parse_ts(str(JV / "JapaneseVowels_TRAIN.ts"))
    # Then there are 270 float32 cases of 12 channels, lengths within [7, 29]
    assert len(data.series) == 270
    assert all(s.dtype == np.float32 and s.ndim == 2 and s.shape[1] == 12 for s in data.series)
    lengths = [s.shape[0] for s in data.series]
    assert min(lengths) >= 7 and max(lengths) <= 29
    assert not any(np.isnan(s).any() for s in data.series)
    # And labels 1..9 are declared in order with 30 cases each
    assert data.class_labels == [str(i) for i in range(1, 10)]
    assert Counter(data.labels) == {str(i): 30 for i in range(1, 10)}
    assert data.problem_name == "JapaneseVowels"
    assert data.header["dimensions"] == 12 and data.header["equalLength"] is False
    # And the first case matches the first line of the file
    assert data.line_numbers[0] == 16
    assert data.series[0][0, 0] == pytest.approx(1.860936)
    assert data.series[0][1, 0] == pytest.approx(1.891651)
    assert data.series[0][0, 1] == pytest.approx(-0.207383)


def test_japanese_vowels_test_parses_to_370_cases():
    data = parse_ts(str(JV / "JapaneseVowels_TEST.ts"))
    assert len(data.series) == 370
    assert len(data.labels) == 370
    assert {s.shape[1] for s in data.series} == {12}
    assert max(s.shape[0] for s in data.series) == 29


def test_univariate_equal_length(tmp_path):
    # Given a univariate equal-length file with upper/lower-case tags and blank lines
    path = write(tmp_path, "uni.ts", """\
@ProblemName Uni
@TIMESTAMPS false
@univariate true
@equalLength true
@seriesLength 3

@classLabel true x y
@DATA
1,2,3:x

4.5,5e-1,-6:y
""")
    # When parsed
    data = parse_ts(path)
    # Then each case is (3, 1) with the exact values, labels and line numbers
    assert [s.shape for s in data.series] == [(3, 1), (3, 1)]
    np.testing.assert_array_equal(data.series[0][:, 0], [1, 2, 3])
    np.testing.assert_allclose(data.series[1][:, 0], [4.5, 0.5, -6])
    assert data.labels == ["x", "y"]
    assert data.class_labels == ["x", "y"]
    assert data.line_numbers == [9, 11]
    assert data.header["seriesLength"] == 3 and data.header["univariate"] is True


def test_arff_comments_are_skipped_as_the_archive_writes_them(tmp_path):
    # Given a file that opens with ARFF's % comments, as aeon's UnitTest (Chinatown's train split)
    # does, and has one between its cases
    path = write(tmp_path, "UnitTest_TRAIN.ts", """\
%# This is a cut down version of the problem ChinaTown
% The Train set is the same as ChinaTown
%
@problemName UnitTest
@univariate true
@equalLength true
@seriesLength 3
@classLabel true 1 2
@data
573.0,375.0,301.0:1
% a comment between cases
394.0,264.0,140.0:2
""")
    # When parsed: before, "UnitTest_TRAIN.ts:1: data before @data"
    data = parse_ts(path)
    # Then both cases are read, and nothing else
    assert data.labels == ["1", "2"] and data.line_numbers == [10, 12]
    np.testing.assert_array_equal(data.series[1][:, 0], [394, 264, 140])


def test_multivariate_unequal_length(tmp_path):
    # Given two cases of different lengths with 2 dimensions each
    path = write(tmp_path, "multi.ts", HEADER_MULTI + "1,2,3:10,20,30:a\n4,5:40,50:b\n")
    data = parse_ts(path)
    # Then shapes are (time, channels) with dimensions as columns
    assert [s.shape for s in data.series] == [(3, 2), (2, 2)]
    np.testing.assert_array_equal(data.series[0], [[1, 10], [2, 20], [3, 30]])
    np.testing.assert_array_equal(data.series[1], [[4, 40], [5, 50]])
    assert data.labels == ["a", "b"]


def test_no_labels_when_class_label_false(tmp_path):
    path = write(tmp_path, "nolab.ts", "@univariate true\n@classLabel false\n@data\n1,2\n3,4,5\n")
    data = parse_ts(path)
    assert data.labels is None and data.class_labels is None
    assert [s.shape for s in data.series] == [(2, 1), (3, 1)]


MISSING_CASE = "?,2,?,4,?:1,?,?,?,5:a\n"


@pytest.mark.parametrize(
    "policy, dim0, dim1",
    [
        ("zero", [0, 2, 0, 4, 0], [1, 0, 0, 0, 5]),
        # forward fill, then the leading gap is back-filled from the first value
        ("ffill", [2, 2, 2, 4, 4], [1, 1, 1, 1, 5]),
        # linear between neighbours, edges held at the nearest known value
        ("interpolate", [2, 2, 3, 4, 4], [1, 2, 3, 4, 5]),
    ],
)
def test_missing_policies_fill_the_expected_values(tmp_path, policy, dim0, dim1):
    # Given a case with '?' at the start, in the middle and at the end
    path = write(tmp_path, "miss.ts", HEADER_MULTI + MISSING_CASE)
    # When parsed with the policy
    data = parse_ts(path, missing=policy)
    # Then the missing values are filled as the policy says
    np.testing.assert_allclose(data.series[0][:, 0], dim0)
    np.testing.assert_allclose(data.series[0][:, 1], dim1)
    assert data.series[0].dtype == np.float32


def test_missing_error_policy_names_file_line_and_dimension(tmp_path):
    path = write(tmp_path, "miss.ts", HEADER_MULTI + "1,2,3:4,5,6:a\n1,2,3:4,?,6:b\n")
    with pytest.raises(TsFormatError) as e:
        parse_ts(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:11:")
    assert "dimension 2" in msg and "missing" in msg


def test_missing_keep_leaves_nan(tmp_path):
    path = write(tmp_path, "miss.ts", HEADER_MULTI + MISSING_CASE)
    x = parse_ts(path, missing="keep").series[0]
    assert np.isnan(x[[0, 2, 4], 0]).all() and x[1, 0] == 2


def test_entirely_missing_dimension_cannot_be_filled(tmp_path):
    path = write(tmp_path, "allmiss.ts", HEADER_MULTI + "1,2:?,?:a\n")
    at = re.escape(path)
    for policy in ("ffill", "interpolate"):
        with pytest.raises(TsFormatError, match=rf"^{at}:10: dimension 2 has no values"):
            parse_ts(path, missing=policy)
    # zero can always fill
    np.testing.assert_array_equal(parse_ts(path, missing="zero").series[0][:, 1], [0, 0])


@pytest.mark.parametrize("policy", ["error", "zero", "ffill", "interpolate", "keep"])
def test_a_dimension_shorter_than_the_others_is_an_error_under_every_policy(tmp_path, policy):
    # Given a case whose second dimension lost values (nothing says they were missing: no '?')
    path = write(tmp_path, "ragged.ts", HEADER_MULTI + "1,2,3,4:10,20,30:a\n")
    # Then it is reported naming the line and both dimensions, never padded and filled
    with pytest.raises(TsFormatError, match=r"ragged\.ts:10: dimension 2 has 3 values but dimension 1 "
                                            r"has 4; expected every dimension"):
        parse_ts(path, missing=policy)


def test_a_file_that_is_not_utf8_names_its_line_and_byte(tmp_path):
    path = tmp_path / "latin1.ts"
    path.write_bytes(HEADER_MULTI.encode() + "1,2:3,4:caf\xe9\n".encode("latin-1"))
    with pytest.raises(TsFormatError, match=r"latin1\.ts: not valid UTF-8 at byte offset \d+ \(line 10, "
                                            r"byte 12 of the line\).*iconv"):
        parse_ts(str(path))


def test_fill_missing_rejects_unknown_policy():
    with pytest.raises(ValueError, match="unknown missing policy"):
        fill_missing(np.zeros((2, 1), np.float32), "mean")


@pytest.mark.parametrize(
    "body, line, needle",
    [
        # @dimensions 2 but the case has 3
        ("1,2:3,4:5,6:a\n", 10, "case has 3 dimensions, expected 2 (from @dimensions)"),
        # not a number
        ("1,2:3,abc:a\n", 10, "dimension 2 value 2 is 'abc'; expected a number"),
        # label not declared
        ("1,2:3,4:a\n1,2:3,4:zzz\n", 11, "class label 'zzz' is not declared in @classLabel"),
        # no label after the last ':'
        ("1,2:3,4:\n", 10, "empty label"),
        # timestamped data
        ("(0,1),(1,2):(0,3),(1,4):a\n", 10, "timestamped .ts files are not supported yet"),
    ],
)
def test_errors_name_file_and_line(tmp_path, body, line, needle):
    path = write(tmp_path, "bad.ts", HEADER_MULTI + body)
    with pytest.raises(TsFormatError) as e:
        parse_ts(path)
    assert str(e.value).startswith(f"{path}:{line}: ")
    assert needle in str(e.value)


def test_undeclared_label_allowed_when_not_checking(tmp_path):
    path = write(tmp_path, "bad.ts", HEADER_MULTI + "1,2:3,4:zzz\n")
    assert parse_ts(path, check_labels=False).labels == ["zzz"]


def test_timestamps_true_header_is_rejected(tmp_path):
    path = write(tmp_path, "ts.ts", "@problemName T\n@timeStamps true\n@data\n")
    at = re.escape(path)
    with pytest.raises(TsFormatError, match=rf"^{at}:2: .*timestamped .ts files are not supported"):
        parse_ts(path)


def test_missing_data_tag_is_an_error(tmp_path):
    path = write(tmp_path, "nodata.ts", "@problemName T\n@univariate true\n")
    with pytest.raises(TsFormatError, match=rf"^{re.escape(path)}:2: no @data line"):
        parse_ts(path)


def test_data_before_header_end_is_an_error(tmp_path):
    path = write(tmp_path, "early.ts", "@problemName T\n1,2,3:a\n@data\n")
    with pytest.raises(TsFormatError, match=rf"^{re.escape(path)}:2: data before @data"):
        parse_ts(path)


def test_bad_boolean_and_dimension_values(tmp_path):
    path = write(tmp_path, "b.ts", "@univariate maybe\n@data\n")
    at = re.escape(path)
    with pytest.raises(TsFormatError, match=rf"^{at}:1: @univariate must be followed by true or"):
        parse_ts(path)
    path = write(tmp_path, "d.ts", "@dimensions two\n@data\n")
    at = re.escape(path)
    with pytest.raises(TsFormatError, match=rf"^{at}:1: @dimensions must be followed by a positiv"):
        parse_ts(path)


def test_dimension_count_inferred_from_first_case_when_undeclared(tmp_path):
    path = write(tmp_path, "infer.ts", "@classLabel true a\n@data\n1:2:a\n1:2:3:a\n")
    with pytest.raises(TsFormatError, match=r":4: case has 3 dimensions, expected 2 \(from the"):
        parse_ts(path)
