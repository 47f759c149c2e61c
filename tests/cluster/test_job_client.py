"""The Jobs API client's own decisions, without a cluster: which address, what the job's runtime
env holds, what is never shown, and the errors a user gets when no cluster answers."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import free_port

from pipeline.cli import main
from pipeline.cluster import client
from pipeline.cluster.client import ClusterError

REPO = Path(__file__).resolve().parents[2]


def test_address_explicit_then_environment_then_default(monkeypatch):
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    assert client.resolve_address() == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265/")
    assert client.resolve_address() == "http://head:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://api:8265")
    assert client.resolve_address() == "http://api:8265"
    assert client.resolve_address("http://other:8265") == "http://other:8265"


@pytest.mark.parametrize("address, local", [
    ("http://127.0.0.1:8265", True), ("http://localhost:8265", True), ("127.0.0.1:6379", True),
    ("auto", True), ("http://[::1]:8265", True), ("http://10.0.0.5:8265", False),
    ("https://ray.example.com", False), ("ray://head:10001", False),
])
def test_local_addresses(address, local):
    assert client.is_local_address(address) is local


def test_runtime_env_uploads_the_code_and_forwards_tracking_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "k")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "")  # set but empty: not forwarded
    monkeypatch.setenv("HOME_SECRET", "not mine")
    renv = client.runtime_env(str(REPO), {"EXTRA": "1"})
    assert renv["working_dir"] == str(REPO)
    assert {".venv/", ".git/", "recur-runs/", "__pycache__/", "/data/"} <= set(renv["excludes"])
    env = renv["env_vars"]
    assert env["MLFLOW_TRACKING_PASSWORD"] == "s3cret" and env["AWS_SECRET_ACCESS_KEY"] == "k"
    assert env["EXTRA"] == "1" and "MLFLOW_TRACKING_USERNAME" not in env and "HOME_SECRET" not in env
    with pytest.raises(ClusterError, match="not a folder"):
        client.runtime_env(str(tmp_path / "missing"))


def test_job_details_hide_environment_values():
    from ray.dashboard.modules.job.pydantic_models import JobDetails

    job = JobDetails(type="SUBMISSION", status="RUNNING", entrypoint="python jobs/run_pipeline.py",
                     submission_id="recur-run-1", runtime_env={
                         "working_dir": "gcs://x.zip", "env_vars": {"MLFLOW_TRACKING_PASSWORD": "s3cret"}})
    details = client._details(job)
    assert details["status"] == "RUNNING" and details["submission_id"] == "recur-run-1"
    assert details["runtime_env"]["env_vars"] == {"MLFLOW_TRACKING_PASSWORD": "***"}
    assert "s3cret" not in repr(details)


def test_no_cluster_is_a_clear_error_naming_the_address(monkeypatch, capsys):
    # RAY_ADDRESS would override the address given to Ray's own client; here the explicit one wins
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:1")
    address = f"http://127.0.0.1:{free_port()}"
    for argv in (["jobs", "list"], ["jobs", "status", "recur-run-x"], ["jobs", "logs", "x", "--follow"],
                 ["jobs", "stop", "x"],
                 ["submit", str(REPO / "configs/quickstart.yaml"), "--working-dir", str(REPO)]):
        assert main([*argv, "--address", address]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"recur: error: no Ray Jobs API at {address}"), err
        assert "ray start --head" in err and "RAY_ADDRESS" in err and "Traceback" not in err


def test_submit_flags_that_belong_to_other_entries(capsys):
    assert main(["submit", "configs/quickstart.yaml", "--resume"]) == 2
    assert "--entry tune" in capsys.readouterr().err
    assert main(["submit", "configs/quickstart.yaml", "--from-scratch", "--entry", "tune"]) == 2
    assert "--entry retrain" in capsys.readouterr().err
