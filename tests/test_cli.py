"""The `recur` command line: config, data import/validate, clear errors without tracebacks."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import free_port, no_ray

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
    with no_ray():  # failed before starting Ray
        code = main(["run", QUICKSTART, "--set", "data.source=null", "--set",
                     f"data.root={tmp_path / 'nothing'}", "--set", f"tracking.runs_dir={tmp_path / 'runs'}"])
    assert code == 2
    assert "nothing" in capsys.readouterr().err


def test_unreachable_tracking_server_fails_before_training(tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with no_ray():
        code = main(["run", QUICKSTART, "--set", f"tracking.tracking_uri={uri}", "--set",
                     f"tracking.runs_dir={tmp_path / 'runs'}", "--set", f"data.root={tmp_path / 'd'}"])
    assert code == 2
    assert f"MLflow tracking server {uri} is not reachable" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # nothing imported, nothing trained


def test_a_folder_as_tracking_uri_is_one_line_naming_the_sqlite_uri_to_use(tmp_path, capsys, monkeypatch):
    # MLflow 3 refuses its file store (./mlruns) with a traceback; recur says it before any import
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    folder = tmp_path / "mlruns"
    with no_ray():
        code = main(["run", QUICKSTART, "--set", f"tracking.tracking_uri={folder}", "--set",
                     f"tracking.runs_dir={tmp_path / 'runs'}", "--set", f"data.root={tmp_path / 'd'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"MLflow tracking URI {folder} is a folder" in err and f"sqlite:///{folder}.db" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_ts_import_errors_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad_TRAIN.ts"
    bad.write_text("@problemName bad\n@univariate true\n@classLabel true a b\n@data\n1,2,3:a\n1,x,3:b\n")
    assert main(["data", "import", "--format", "ts", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad_TRAIN.ts:6" in err


def test_ui_on_a_port_something_holds_is_one_line_and_starts_no_server(tmp_path, capsys):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        port = held.getsockname()[1]
        # before: MLflow's server logged the failed bind, exited 0, and the holder answered instead
        code = main(["ui", "--port", str(port), "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"--port {port}: 127.0.0.1:{port} is in use" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # no store made, no server started
    assert main(["ui", "--port", "70000"]) == 2
    assert "expected a port number from 1 to 65535" in capsys.readouterr().err


def test_ui_takes_a_port_whose_last_server_just_stopped():
    # a UI stopped a moment ago leaves its closed connections in TIME_WAIT on its port, which a
    # plain bind counts as in use; uvicorn binds with SO_REUSEADDR, and so does the check
    import socket

    from pipeline.commands.ui import _port_free

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", free_port()))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    conn.close()  # the server's side closes first: TIME_WAIT on its port
    client.close()
    server.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the check saw before
    _port_free(port)  # no error


@pytest.mark.slow  # starts an MLflow server (`recur ui`)
def test_ui_serves_the_local_store_on_loopback_and_stops_with_recur(tmp_path):
    """`recur ui` serves the store; `kill <its PID>` (recur's process only, not its group) stops
    the MLflow server and its workers too: the port is free within 10 s (before: the server
    and its nine children kept serving)."""
    import signal
    import time
    import urllib.request


    port = free_port()
    log = tmp_path / "ui.log"  # a file, not a pipe nobody reads: the server's request lines would fill it
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ui", "--port", str(port),
                                 "--runs-dir", str(tmp_path / "runs")],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180  # MLflow server start: ~10 s idle, minutes on a busy machine
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.time() < deadline, "MLflow UI did not answer"
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert b"MLflow" in r.read()
        assert (tmp_path / "runs" / "mlflow.db").exists()  # the sqlite store under --runs-dir
        os.kill(proc.pid, signal.SIGTERM)  # recur alone, as `kill PID` does
        killed = time.monotonic()
        while _answers(port) and time.monotonic() - killed < 10:
            time.sleep(0.2)
        freed = time.monotonic() - killed
        assert not _answers(port), "the MLflow server still serves after recur was killed"
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM  # after stopping the whole group
        print(f"recur ui killed: port {port} free after {freed:.1f} s")
    finally:  # whatever failed: recur stops its server's group; by its id if recur could not
        server_groups = _children(proc.pid)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        for group in server_groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_job_entry_point_forwards_config_and_overrides(tmp_path, capsys):
    # given the `ray job submit` entry point, when it runs with an override pointing MLflow at a
    # port where nothing listens, then the override reached the workflow (which refused early)
    import importlib.util


    spec = importlib.util.spec_from_file_location("run_pipeline", REPO / "jobs" / "run_pipeline.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    uri = f"http://127.0.0.1:{free_port()}"
    assert job.main(["--config", QUICKSTART, "--set", f"tracking.tracking_uri={uri}"]) == 2
    assert uri in capsys.readouterr().err


# --------------------------------------------------------------- errors: one line, exit 2


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"recur {version('recur')}"


FAST_REFUSAL = """
import json, sys, time
started = time.perf_counter()
from pipeline.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.perf_counter() - started,
                  "heavy": sorted(m for m in ("torch", "ray", "mlflow") if m in sys.modules)}))
"""


@pytest.mark.parametrize("content,says", [
    ("train:\n  learning_rate: 0.1\n", "train.learning_rate: unknown key"),
    ("registry: {metric: bleu}\n", "registry.metric must be one of ['accuracy', 'macro_f1']"),  # the task's
    (None, "cannot read config file"),
])
def test_a_bad_or_missing_config_is_refused_before_ray_mlflow_or_torch_load(tmp_path, content, says):
    # given a config with an unknown key, a metric its task does not have, or no file at all
    config = tmp_path / "bad.yaml"
    if content is not None:
        config.write_text(content)
    # when `recur run` gets it
    proc = subprocess.run([sys.executable, "-c", FAST_REFUSAL, "run", str(config)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # then it is refused in one line naming the key or the file, before the heavy imports
    assert result["code"] == 2 and result["heavy"] == [], result
    assert proc.stderr.count("\n") <= 2 and "Traceback" not in proc.stderr, proc.stderr
    assert says in proc.stderr and (content is not None or "bad.yaml" in proc.stderr)
    # about 0.5 s of CPU (before: about 7 s, imports of Ray, MLflow and torch first); the wall-time
    # bound is generous for a busy CI machine (3.5 s measured with 30 processes on 2 cores)
    assert result["seconds"] < 10, result


def test_debug_adds_the_traceback_to_the_one_line(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {learning_rate: 0.1}\n")
    assert main(["config", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("recur: error: invalid config")
    for argv, env in ((["--debug", "config", "show", str(bad)], None), (["config", "show", str(bad)], "1")):
        if env:
            monkeypatch.setenv("RECUR_DEBUG", env)
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("Traceback") and "ConfigError" in err
        assert "\nrecur: error: invalid config:\n  train.learning_rate: unknown key" in err


def test_models_list_and_promote_name_what_the_registry_lacks(tmp_path, capsys):
    from mlflow import MlflowClient

    from pipeline.tracking.store import default_tracking_uri

    runs = tmp_path / "runs"
    runs.mkdir()
    client = MlflowClient(default_tracking_uri(str(runs)))
    client.create_registered_model("vowels")
    client.create_model_version("vowels", source=(tmp_path / "model").as_uri())
    store = ["--runs-dir", str(runs)]
    capsys.readouterr()  # MLflow's own lines about creating the store
    # an unknown model: before, MLflow's traceback ("Registered Model with name=nosuch not found")
    assert main(["models", "list", "nosuch", *store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no registered model 'nosuch'" in err
    assert "registered models there: vowels" in err
    # an unknown version, and a version that is no number
    assert main(["models", "promote", "vowels", "7", *store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vowels has no version 7" in err and "(versions: 1)" in err
    assert main(["models", "promote", "vowels", "seven", *store]) == 2
    assert "VERSION is a version number" in capsys.readouterr().err
    assert main(["models", "promote", "vowels", "1", *store]) == 0
    assert "vowels version 1 is now @champion" in capsys.readouterr().out


def test_run_with_a_dashboard_address_says_which_address_recur_run_takes(tmp_path):
    # given RAY_ADDRESS in the form docs/ray-cluster.md exports for `recur submit` (a dashboard URL)
    from conftest import make_toy_dataset

    dataset = make_toy_dataset(tmp_path / "toy")
    env = {**os.environ, "RAY_ADDRESS": "http://127.0.0.1:8265"}
    env.pop("MLFLOW_TRACKING_URI", None)
    sets = ["data.source=null", f"data.root={dataset}", f"tracking.runs_dir={tmp_path / 'runs'}"]
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", QUICKSTART,
                           *[a for s in sets for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    # then one line and exit 2 (before: Ray's ValueError as a traceback)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("recur: error: RAY_ADDRESS=http://127.0.0.1:8265 is a Ray dashboard")
    assert "`recur submit CONFIG`" in last and "Traceback" not in proc.stderr


def test_run_takes_the_tracking_uri_as_an_option(tmp_path, capsys):

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = main(["run", QUICKSTART, "--tracking-uri", uri, "--set", f"tracking.runs_dir={tmp_path / 'runs'}",
                 "--set", f"data.root={tmp_path / 'd'}"])
    assert code == 2 and f"MLflow tracking server {uri} is not reachable" in capsys.readouterr().err
