"""The README's quick start: the shipped config on the shipped JapaneseVowels data, 2 workers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.cli import main

pytestmark = pytest.mark.slow

QUICKSTART = str(Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml")


def test_quickstart_reaches_published_accuracy(ray_local, tmp_path, capsys):
    # given the quick-start config, with its store redirected to a temporary folder
    store = ["--set", f"tracking.runs_dir={tmp_path / 'runs'}", "--set", f"data.root={tmp_path / 'jv'}"]
    # when it runs end to end
    assert main(["run", QUICKSTART, *store]) == 0
    out = capsys.readouterr().out
    # then the summary reports accuracy at least 0.95 (published: TWIESN 0.965, FCN 0.993),
    # macro-F1, the run, the UI address and the registry decision
    accuracy = float(re.search(r"test accuracy\s+([\d.]+)", out).group(1))
    assert accuracy >= 0.95, out
    assert re.search(r"test macro f1\s+0\.9\d", out)
    assert "MLflow run" in out and "http://127.0.0.1:5000" in out
    assert "japanese-vowels version 1: became @champion" in out
    # and the imported dataset matches the shipped files: 370 test rows, 270 train+val rows
    manifest = (tmp_path / "jv" / "manifest.json").read_text()
    assert '"rows": 370' in manifest
