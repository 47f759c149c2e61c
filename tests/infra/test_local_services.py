"""infra/local/*.sh for real: an S3 endpoint (moto) and an MLflow server with basic auth, host
allow-listing and its artifacts proxied to that endpoint, started and stopped by their PID files."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MLFLOW_SH = REPO / "infra" / "local" / "mlflow-server.sh"
S3_SH = REPO / "infra" / "local" / "s3-server.sh"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without MLflow/AWS settings (a developer's own would leak in)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "AWS_", "RECUR_MLFLOW_", "PGPASSWORD"))}
    return {**env, "PYTHON": sys.executable, **extra}


def sh(*args, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def status_of(url: str, *, user: str | None = None, password: str | None = None,
              host: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    if host is not None:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


# ---- fast: what the scripts refuse, and that stop only ever ends its own server ----------------

def test_a_password_in_the_backend_uri_option_is_refused(tmp_path):
    uri = "postgresql://mlflow:" + "hunter2hunter2@127.0.0.1:5432/mlflow"
    r = sh(MLFLOW_SH, "start", tmp_path / "m", free_port(), "--backend-store-uri", uri, env=clean_env())
    assert r.returncode == 2 and "PGPASSWORD" in r.stderr
    assert "hunter2" not in r.stdout + r.stderr
    assert not (tmp_path / "m" / "mlflow.pid").exists()


def test_basic_auth_needs_an_admin_password_on_first_start(tmp_path):
    r = sh(MLFLOW_SH, "start", tmp_path / "m", free_port(), "--basic-auth", env=clean_env())
    assert r.returncode == 1 and "MLFLOW_AUTH_ADMIN_PASSWORD" in r.stderr
    assert not (tmp_path / "m" / "mlflow.pid").exists()


@pytest.mark.parametrize("script,pidfile", [(MLFLOW_SH, "mlflow.pid"), (S3_SH, "s3.pid")])
def test_stop_ends_only_its_own_server(tmp_path, script, pidfile):
    """A PID file that names another program (a stale file, a reused PID) stops nothing."""
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        (tmp_path / pidfile).write_text(f"{other.pid}\n")
        r = sh(script, "stop", tmp_path, env=clean_env())
        assert r.returncode == 0 and "not running" in r.stdout
        assert other.poll() is None, "stop ended a process that was not its server"
        assert not (tmp_path / pidfile).exists()
        assert sh(script, "status", tmp_path, env=clean_env()).returncode == 1
    finally:
        os.killpg(other.pid, signal.SIGKILL)
        other.wait()


# ---- slow: both servers for real ----------------------------------------------------------------

@pytest.mark.slow
def test_s3_and_mlflow_with_basic_auth_and_allowed_hosts(tmp_path, monkeypatch):
    s3_port, mlflow_port = free_port(), free_port()
    s3_dir, mlflow_dir = tmp_path / "s3", tmp_path / "mlflow"
    endpoint, uri = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{mlflow_port}"
    password = secrets.token_urlsafe(18)
    # moto takes any key; these are placeholders, not credentials
    aws = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    env = clean_env(MLFLOW_AUTH_ADMIN_PASSWORD=password, MLFLOW_S3_ENDPOINT_URL=endpoint, **aws)
    pids = []
    try:
        r = sh(S3_SH, "start", s3_dir, s3_port, "--bucket", "recur-artifacts", env=clean_env())
        assert r.returncode == 0, r.stdout + r.stderr
        assert "bucket s3://recur-artifacts" in r.stdout
        pids.append(int((s3_dir / "s3.pid").read_text()))

        r = sh(MLFLOW_SH, "start", mlflow_dir, mlflow_port, "--basic-auth", "--workers", "1",
               "--artifacts-destination", "s3://recur-artifacts/mlflow", env=env)
        assert r.returncode == 0, r.stdout + r.stderr + (mlflow_dir / "server.log").read_text()[-3000:]
        pid = int((mlflow_dir / "mlflow.pid").read_text())
        pids.append(pid)
        assert os.getpgid(pid) == pid  # its own process group, which stop ends
        assert "basic auth" in r.stdout
        # the admin password is in no output, log or file the script wrote
        for text in [r.stdout, r.stderr, *(p.read_text(errors="replace") for p in mlflow_dir.iterdir()
                                          if p.suffix in (".log", ".ini", ".url"))]:
            assert password not in text

        # basic auth: nothing without the right credentials
        assert status_of(uri + SEARCH) == 401
        assert status_of(uri + SEARCH, user="admin", password=password + "x") == 401
        assert status_of(uri + SEARCH, user="admin", password=password) == 200
        # host allow-listing: only 127.0.0.1:PORT and localhost:PORT, not even a private address
        # (which MLflow's default list allows)
        admin = {"user": "admin", "password": password}
        assert status_of(uri + SEARCH, host=f"localhost:{mlflow_port}", **admin) == 200
        assert status_of(uri + SEARCH, host="evil.example.com", **admin) == 403
        assert status_of(uri + SEARCH, host=f"10.1.2.3:{mlflow_port}", **admin) == 403

        # a client with MLFLOW_TRACKING_USERNAME/PASSWORD works; artifacts land in the S3 bucket
        from mlflow import MlflowClient

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = MlflowClient(tracking_uri=uri)
        run = client.create_run(client.create_experiment("infra-local"))
        artifact = tmp_path / "note.txt"
        artifact.write_text("proxied to S3")
        client.log_artifact(run.info.run_id, str(artifact))
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["note.txt"]

        import boto3

        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="recur-artifacts").get("Contents", [])]
        assert keys == [f"mlflow/{run.info.experiment_id}/{run.info.run_id}/artifacts/note.txt"]
    finally:
        stopped = [sh(MLFLOW_SH, "stop", mlflow_dir, env=clean_env()),
                   sh(S3_SH, "stop", s3_dir, env=clean_env())]
        deadline = time.time() + 10
        while any(group_alive(pid) for pid in pids) and time.time() < deadline:
            time.sleep(0.2)
        survivors = [pid for pid in pids if group_alive(pid)]
        for pid in survivors:  # only if a stop failed: the test leaves no server behind
            os.killpg(pid, signal.SIGKILL)
    for s in stopped:
        assert s.returncode == 0 and "stopped" in s.stdout, s.stdout + s.stderr
    assert not survivors, "a server's process group outlived stop"
    assert not (mlflow_dir / "mlflow.pid").exists() and not (s3_dir / "s3.pid").exists()
