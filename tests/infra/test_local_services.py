"""infra/local/*.sh for real: an S3 endpoint (moto), an MLflow server with basic auth, host
allow-listing and its artifacts proxied to that endpoint, and a Ray head with its Jobs API on
127.0.0.1 and token authentication, started and stopped by their PID files."""

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
from conftest import free_port

REPO = Path(__file__).resolve().parents[2]
MLFLOW_SH = REPO / "infra" / "local" / "mlflow-server.sh"
S3_SH = REPO / "infra" / "local" / "s3-server.sh"
RAY_SH = REPO / "infra" / "local" / "ray-head.sh"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


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


@pytest.mark.parametrize("script,pidfile",
                         [(MLFLOW_SH, "mlflow.pid"), (S3_SH, "s3.pid"), (RAY_SH, "ray.pid")])
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
def test_s3_and_mlflow_with_basic_auth_and_allowed_hosts(tmp_path, monkeypatch, capsys):
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

        # recur is refused before any work, in one line, naming the server and what to set: without
        # credentials, and with a wrong password in the URI (a 401, not the DNS failure urllib
        # gives for user:password@host), which it never prints
        from pipeline.cli import main

        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            monkeypatch.delenv(key, raising=False)
        wrong = f"http://admin:{password}x@127.0.0.1:{mlflow_port}"
        for tracking_uri, who in ((uri, "no credentials were given"), (wrong, "with the credentials given")):
            code = main(["run", str(REPO / "configs" / "quickstart.yaml"),
                         "--set", f"tracking.tracking_uri={tracking_uri}",
                         "--set", f"tracking.runs_dir={tmp_path / 'runs'}",
                         "--set", f"data.root={tmp_path / 'd'}"])
            err = capsys.readouterr().err
            assert code == 2 and "refused recur (401 Unauthorized, " + who in err, err
            assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in err
            assert password not in err and len(err.strip().splitlines()) == 1
            assert not (tmp_path / "d").exists()

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


def _outward_ip() -> str | None:
    """This machine's address on its default route (no packet is sent), None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        return s.getsockname()[0]


@pytest.mark.slow
def test_ray_head_on_loopback_with_token_auth(tmp_path):
    """infra/local/ray-head.sh: the Jobs API on 127.0.0.1 only, refused without the head's token,
    recur submits with it; stopped by its PID file."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    head, port = tmp_path / "ray", free_port()
    # a second head on this machine (the tests' in-process Ray runs too): every port its own
    flags = ("--port", "--ray-client-server-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
             "--node-manager-port", "--object-manager-port")
    ports = [a for flag in flags for a in (flag, str(free_port()))]
    started = sh(RAY_SH, "start", head, port, "--", "--num-cpus", "1", *ports, env=env, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int((head / "ray.pid").read_text())
    try:
        token_file = head / "auth_token"
        assert f"RAY_AUTH_TOKEN_PATH={token_file}" in started.stdout
        assert token_file.stat().st_mode & 0o777 == 0o600 and len(token_file.read_text()) == 64
        url = f"http://127.0.0.1:{port}"
        assert sh(RAY_SH, "status", head, env=env).stdout.startswith(f"running (pid {pid})")

        def jobs_api(token: str | None) -> int:
            request = urllib.request.Request(f"{url}/api/jobs/")
            if token is not None:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status
            except urllib.error.HTTPError as e:
                return e.code

        assert jobs_api(None) in (401, 403) and jobs_api(secrets.token_hex(32)) in (401, 403)
        assert jobs_api(token_file.read_text()) == 200
        ip = _outward_ip()
        if ip is not None and not ip.startswith("127."):  # the dashboard is not on the other address
            with pytest.raises(OSError):
                socket.create_connection((ip, port), timeout=5).close()
        # recur takes the token from RAY_AUTH_TOKEN_PATH, as the start message says
        listed = subprocess.run([sys.executable, "-m", "pipeline.cli", "jobs", "list", "--address", url],
                                cwd=tmp_path, env={**env, "RAY_AUTH_TOKEN_PATH": str(token_file)},
                                capture_output=True, text=True, timeout=120)
        assert listed.returncode == 0, listed.stderr
        refused = subprocess.run([sys.executable, "-m", "pipeline.cli", "jobs", "list", "--address", url],
                                 cwd=tmp_path, env={**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)},
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "token authentication" in refused.stderr, refused.stderr
    finally:
        stopped = sh(RAY_SH, "stop", head, env=env, timeout=120)
        deadline = time.time() + 15  # the group's last processes are reaped just after `stop`
        while group_alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        survived = group_alive(pid)
        if survived:  # only if the stop failed: the test leaves no Ray behind
            os.killpg(pid, signal.SIGKILL)
    assert stopped.stdout.startswith(f"stopped {pid}"), stopped.stdout + stopped.stderr
    assert not survived and not (head / "ray.pid").exists()
    assert sh(RAY_SH, "status", head, env=env).returncode == 1
