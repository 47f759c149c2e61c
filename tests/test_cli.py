"""The `recur` command line: config, data import/validate, clear errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from pipeline.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def test_config_show_prints_resolved_config_with_overrides(capsys):
    assert main(["config", "show", QUICKSTART, "--set", "train.lr=0.003"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["lr"] == 0.003
    assert shown["model"]["cell"] == "gru"  # from the file
    assert shown["resources"]["num_workers"] == 2


def test_config_schema_is_json(capsys):
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "train" in schema["properties"]


def test_bad_config_is_a_clear_error_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "config", "show", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "train.learning_rate" in proc.stderr and "bad.yaml" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_data_import_builtin_ts_then_validate(tmp_path, capsys):
    out = tmp_path / "jv"
    # when the shipped JapaneseVowels files are imported through the CLI
    assert main(["data", "import", "--format", "ts", "builtin://JapaneseVowels/JapaneseVowels_TRAIN.ts",
                 "builtin://JapaneseVowels/JapaneseVowels_TEST.ts",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test 370" in printed and "channels 12, 9 labels" in printed
    # then the dataset validates
    assert main(["data", "validate", str(out)]) == 0
    capsys.readouterr()
    # and when one value of the test split is tampered with, validation fails naming the problem
    part = next((out / "test").glob("*.parquet"))
    table = pq.read_table(part)
    rows = table.to_pylist()
    rows[3]["x"][0][0] = float("nan")
    pq.write_table(type(table).from_pylist(rows, schema=table.schema), part)
    assert main(["data", "validate", str(out)]) == 1
    report = capsys.readouterr().out
    assert rows[3]["id"] in report and "NaN" in report


def test_run_on_missing_dataset_names_the_folder(tmp_path, capsys):
    code = main(["run", QUICKSTART, "--set", "data.source=null", "--set", f"data.root={tmp_path / 'nothing'}",
                 "--set", f"tracking.runs_dir={tmp_path / 'runs'}"])
    assert code == 2
    assert "nothing" in capsys.readouterr().err
    import ray

    assert not ray.is_initialized()  # failed before starting Ray


def test_unreachable_tracking_server_fails_before_training(tmp_path, capsys):
    import ray
    from conftest import free_port

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = main(["run", QUICKSTART, "--set", f"tracking.tracking_uri={uri}",
                 "--set", f"tracking.runs_dir={tmp_path / 'runs'}", "--set", f"data.root={tmp_path / 'd'}"])
    assert code == 2
    assert f"MLflow tracking server {uri} is not reachable" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # nothing imported, nothing trained
    assert not ray.is_initialized()


def test_ts_import_errors_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad_TRAIN.ts"
    bad.write_text("@problemName bad\n@univariate true\n@classLabel true a b\n@data\n1,2,3:a\n1,x,3:b\n")
    assert main(["data", "import", "--format", "ts", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad_TRAIN.ts:6" in err


def test_ui_serves_the_local_store_on_loopback(tmp_path):
    import os
    import signal
    import time
    import urllib.request

    from conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ui", "--port", str(port),
                             "--runs-dir", str(tmp_path / "runs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.time() < deadline, "MLflow UI did not answer"
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b"MLflow" in r.read()
        assert (tmp_path / "runs" / "mlflow.db").exists()  # the sqlite store under --runs-dir
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_job_entry_point_forwards_config_and_overrides(tmp_path, capsys):
    # given the `ray job submit` entry point, when it runs with an override pointing MLflow at a
    # port where nothing listens, then the override reached the workflow (which refused early)
    import importlib.util

    from conftest import free_port

    spec = importlib.util.spec_from_file_location("run_pipeline", REPO / "jobs" / "run_pipeline.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    uri = f"http://127.0.0.1:{free_port()}"
    assert job.main(["--config", QUICKSTART, "--set", f"tracking.tracking_uri={uri}"]) == 2
    assert uri in capsys.readouterr().err
