"""Parquet splits read through Ray Data with a footer-reader pool sized to the files.

Given a split stored as one file or as many, when recur plans the read, then Ray Data is asked for
one footer-reading actor per 10 files (at least 1, at most Ray's 32) instead of its fixed 32, only
for that call, and a value the user exported wins. (Reading a split on a real Ray:
tests/training/test_parquet_ingest.py; no test before tests/workflow/test_bad_input.py starts Ray, whose
tests check that bad input fails before Ray starts.)
"""

from __future__ import annotations

import os

from pipeline.data.loading import footer_readers, with_footer_readers

VARIABLE = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"


def test_one_reader_per_ten_files_within_rays_bounds():
    assert [footer_readers(n) for n in (0, 1, 10, 11, 95, 320, 5000)] == [1, 1, 1, 2, 10, 32, 32]


def test_the_pool_size_is_set_for_the_call_only_and_a_users_value_wins(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert with_footer_readers(25, lambda: os.environ.get(VARIABLE)) == "3"
    assert VARIABLE not in os.environ
    monkeypatch.setenv(VARIABLE, "8")
    assert with_footer_readers(25, lambda: os.environ.get(VARIABLE)) == "8"
    assert os.environ[VARIABLE] == "8"
