"""`recur predict` and `jobs/predict.py`, fast tier: mistakes are clear errors (status 2, no
traceback) found before any model is fetched or Ray is started."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.commands.predict import parse_params
from pipeline.errors import CommandError

REPO = Path(__file__).resolve().parents[2]


def test_missing_dataset_is_named(tmp_path, capsys):
    code = main(["predict", "toy", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "out"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "nothing" in err and "manifest.json" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_model_names_and_params_are_errors(tmp_path, capsys):
    assert main(["predict", "toy/latest", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "version must be a number" in capsys.readouterr().err
    assert main(["predict", "toy", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--param", "beam_size"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert parse_params(["beam_size=4", "temperature=0.5", "probabilities=true", "text="]) == {
        "beam_size": 4, "temperature": 0.5, "probabilities": True, "text": ""}
    with pytest.raises(CommandError):
        parse_params(["=1"])


def test_job_entry_point_checks_arguments_then_forwards(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("predict_job", REPO / "jobs" / "predict.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    with pytest.raises(SystemExit) as exit_info:  # --out is required: argparse says so in the log
        job.main(["toy", "--data", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err
    # forwarded to `recur predict`, which names the missing dataset
    assert job.main(["toy", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "nothing" in capsys.readouterr().err
