"""`recur schedule` on the command line, for what needs no cluster: argument checks, the state
file's default place, and cron ticks that only (re)read the next fire time."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import make_toy_dataset

from pipeline.cli import main


@pytest.fixture
def config(tmp_path) -> str:
    root = make_toy_dataset(tmp_path / "data")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"root": str(root)}, "registry": {"model_name": "cli-toy"},
                                    "tracking": {"runs_dir": str(tmp_path / "runs")}}))
    return str(path)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["schedule", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cron_once_sets_and_keeps_the_next_fire_time(config, tmp_path, capsys):
    args = [config, "--cron", "0 3 * * *", "--once", "--entrypoint", "true", "--working-dir", str(tmp_path),
            "--address", "http://127.0.0.1:9"]  # nothing is due: the cluster is never asked
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    assert "recur schedule: cron '0 3 * * *' (UTC); policy forbid; cluster http://127.0.0.1:9" in out
    assert "cron schedule '0 3 * * *' (UTC) set; first fire at " in out
    next_line = [line for line in out.splitlines() if "next cron fire at" in line][0]
    [state] = (tmp_path / "runs" / "schedules").glob("cli-toy-*.json")
    saved = json.loads(state.read_text())
    assert saved["cron"] == "0 3 * * *" and saved["next_fire"].endswith("T03:00:00+00:00")
    assert saved["last_job"] is None

    code, out, _ = _run(capsys, *args)  # a restart: the same next fire time, not a new one
    assert code == 0 and "first fire" not in out
    assert next_line.split("next cron fire at ")[1].split()[0] in out
    assert json.loads(state.read_text())["next_fire"] == saved["next_fire"]


def test_on_new_data_waits_for_a_complete_dataset(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "not-yet")},
                                    "tracking": {"runs_dir": str(tmp_path / "runs")}}))
    code, out, err = _run(capsys, str(path), "--on-new-data", "--once", "--entrypoint", "true",
                          "--working-dir", str(tmp_path), "--state", str(tmp_path / "s.json"))
    assert code == 0, err
    assert "no complete dataset at the data location" in out
    assert json.loads((tmp_path / "s.json").read_text())["last_data_version"] is None


@pytest.mark.parametrize("args, message", [
    ([], "give --cron EXPR, --on-new-data, or both"),
    (["--cron", "3am"], "invalid cron expression '3am'"),
    (["--cron", "0 3 * * *", "--timezone", "Nowhere/Here"], "unknown time zone"),
    (["--on-new-data", "--poll-seconds", "0"], "--poll-seconds must be > 0"),
    (["--on-new-data", "--entrypoint", " "], "--entrypoint is empty"),
])
def test_bad_arguments_are_errors(config, tmp_path, capsys, args, message):
    code, _, err = _run(capsys, config, "--working-dir", str(tmp_path), *args)
    assert code == 2 and message in err


def test_the_retrain_script_must_be_in_the_working_dir(config, tmp_path, capsys):
    code, _, err = _run(capsys, config, "--on-new-data", "--once", "--working-dir", str(tmp_path))
    assert code == 2 and f"jobs/retrain.py not found in {tmp_path}" in err
