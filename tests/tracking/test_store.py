"""Where MLflow lives (pipeline.tracking.store): credentials in a tracking URI, and `recur ui`'s
server command line. Secrets go in headers and environments, never in DNS lookups or `ps`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

from pipeline.tracking.store import TrackingUnavailable, check_reachable, server_command

PLANTED = "pl4nted-db-pw-7c1e"  # pragma: allowlist secret


def test_a_password_in_the_uri_is_a_header_not_part_of_a_host_name(mlflow_server):
    # given a URI with user:password@ (MLflow's client accepts it), when recur checks the server,
    # then it answers (urllib would have looked up "ann:pw@127.0.0.1" in DNS) ...
    host = mlflow_server.removeprefix("http://")
    check_reachable(f"http://ann:{PLANTED}@{host}")
    # ... and where nothing listens, the error is the refused connection, without the password
    uri = f"http://ann:{PLANTED}@127.0.0.1:{free_port()}"
    with pytest.raises(TrackingUnavailable) as caught:
        check_reachable(uri)
    message = str(caught.value)
    assert "Connection refused" in message and "http://ann:***@127.0.0.1:" in message
    assert PLANTED not in message and "Name or service" not in message


def test_a_password_holding_slash_or_hash_unencoded_is_named_without_it():
    with pytest.raises(TrackingUnavailable) as caught:
        check_reachable(f"http://ann:{PLANTED}/x#y@127.0.0.1:{free_port()}")
    assert "percent-encode" in str(caught.value) and PLANTED not in str(caught.value)


def test_the_server_command_holds_no_store_uri():
    uri = f"postgresql://mlflow:{PLANTED}@db.internal:5432/mlflow"
    command, env = server_command(uri, port=5000, runs_dir=Path("/tmp/runs"))
    assert PLANTED not in " ".join(command) and "--backend-store-uri" not in command
    assert env["MLFLOW_BACKEND_STORE_URI"] == uri  # mlflow server reads it from there


def _descendant_cmdlines(root: int) -> list[str]:
    """The command lines of `root` and every process below it (its children get process groups
    of their own), as `ps` shows them to any user of the machine."""
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:  # /proc/PID/stat: "pid (name) state ppid ..."; the name may hold spaces
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    family, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in family} - family
        family |= more
        grew = bool(more)
    lines = []
    for pid in family:
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            lines.append(line.decode(errors="replace"))
        except OSError:
            continue
    return lines


def test_recur_ui_keeps_the_database_password_off_every_command_line(tmp_path):
    # given a tracking URI with a database password in the environment (where docs/security.md puts it),
    # when `recur ui` starts `mlflow server`
    uri = f"postgresql://mlflow:{PLANTED}@127.0.0.1:{free_port()}/mlflow"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "ui", "--port", str(free_port()),
                             "--runs-dir", str(tmp_path / "runs")],
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    seen: list[str] = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any("mlflow server" in line for line in seen):
            seen += _descendant_cmdlines(proc.pid)
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # recur stops its server's group itself
        proc.wait(timeout=30)
    output = proc.stdout.read().decode(errors="replace")
    # then the server was seen, and no command line of recur's or its children holds the password
    assert any("mlflow server" in line for line in seen), (seen, output)
    assert not [line for line in seen if PLANTED in line]
    assert PLANTED not in output  # recur's own line masks it too


def test_the_local_ray_token_file_is_written_readable_by_its_owner_only(tmp_path, monkeypatch):
    from pipeline.workflow.session import private_token_file

    for key in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        monkeypatch.delenv(key, raising=False)
    # given no token yet: recur writes one, 0600, before a local ray.init would write it 0644
    path = tmp_path / ".ray" / "auth_token"
    private_token_file(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_text()) == 64
    # given one Ray wrote world-readable: made private, its token kept
    token = path.read_text()
    path.chmod(0o644)
    private_token_file(path)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_text() == token


def test_a_run_reopens_while_the_caller_has_another_experiment_active(tmp_path):
    """Given a caller (a notebook, another test) that set an active experiment on one store, when
    recur reopens a run of its own experiment on another store, then MLflow takes it (the active
    experiment is set aside for recur's block) and the caller's is back afterwards."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking import fluent

    from pipeline.config import RecurConfig
    from pipeline.tracking.run import RunTracker
    from pipeline.tracking.store import use_tracking_uri

    theirs, ours = f"sqlite:///{tmp_path / 'theirs.db'}", f"sqlite:///{tmp_path / 'ours.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(theirs)  # as the caller does it
    active = mlflow.set_experiment("the-callers").experiment_id
    try:
        client = MlflowClient(ours)
        client.create_experiment("another", artifact_location=(tmp_path / "b").as_uri())
        experiment = client.create_experiment("recur", artifact_location=(tmp_path / "a").as_uri())
        assert experiment != active  # ids are per store: these two differ
        run_id = client.create_run(experiment).info.run_id
        with use_tracking_uri(ours):
            tracker = RunTracker(RecurConfig(), ours, experiment)
            assert tracker.start(config_sources=[], resume_run_id=run_id) == run_id
            mlflow.end_run()
        assert fluent._active_experiment_id == active and mlflow.get_tracking_uri() == theirs
    finally:
        fluent._active_experiment_id = None
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        mlflow.set_tracking_uri(previous)
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.mark.parametrize("uri", ["./mlruns", "mlruns", "file:///tmp/mlruns", "file:mlruns"])
def test_a_file_store_uri_is_refused_unless_mlflow_is_told_to_allow_it(uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(TrackingUnavailable, match=r"is a folder \(MLflow's file store\).* sqlite:///"):
        check_reachable(uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's own opt-out: recur lets it through
    check_reachable(uri)


@pytest.mark.parametrize("uri", ["databricks", "postgresql://db.internal/mlflow"])
def test_stores_that_are_no_folder_pass_the_file_store_check(uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    check_reachable(uri)
