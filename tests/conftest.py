"""Shared fixtures: a real local Ray, tiny canonical datasets, a real MLflow server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, shared by every test that trains."""
    import ray

    if not ray.is_initialized():
        # With the dashboard: Ray Train's PlacementGroupCleaner asks the State API (served by the
        # dashboard) whether a controller died, and frees its workers' placement group. Without
        # it, a Tune trial stopped by its scheduler would keep its workers' CPUs forever.
        # The cleaner finds "the" cluster from RAY_ADDRESS, else by looking for GCS processes,
        # and gives up for good when it sees two (another Ray on the machine: a cluster test's,
        # a developer's): its placement group is then never freed and the next trial waits
        # forever for CPUs. So the GCS port is chosen here and every process Ray starts (they
        # inherit this environment from the raylet) gets RAY_ADDRESS naming this cluster; the
        # test process's own environment is left as it was.
        port = free_port()
        pinned = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"127.0.0.1:{port}"}
        saved = {key: os.environ.get(key) for key in pinned}
        os.environ.update(pinned)
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                     dashboard_port=free_port(), log_to_driver=True)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        assert ray.get_runtime_context().gcs_address.endswith(f":{port}")
    yield ray
    ray.shutdown()


def make_toy_dataset(root: Path, *, n_train=96, n_val=32, n_test=48, num_channels=3, seed=0) -> Path:
    """Two classes told apart by the sign of channel 0's mean; lengths 4..14."""
    from pipeline.data.contract import make_table, write_dataset

    rng = np.random.default_rng(seed)

    def split(n, prefix):
        ids, xs, ys = [], [], []
        for i in range(n):
            label = i % 2
            length = int(rng.integers(4, 15))
            x = rng.normal(0, 1, size=(length, num_channels)).astype(np.float32)
            x[:, 0] += 1.5 if label else -1.5
            ids.append(f"{prefix}:{i}")
            xs.append(x)
            ys.append(label)
        return make_table(ids, xs, ys)

    write_dataset(
        str(root),
        {"train": split(n_train, "train"), "val": split(n_val, "val"), "test": split(n_test, "test")},
        name="toy", task="classify", labels=["neg", "pos"], sources=[], import_params={"generator": "toy"},
    )
    return root


@pytest.fixture
def toy_dataset(tmp_path) -> Path:
    return make_toy_dataset(tmp_path / "toy")


def padded(seqs):
    """List of (T_i, C) tensors -> zero-padded x_BTC and lengths_B."""
    import torch

    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.zeros(len(seqs), int(lengths.max()), seqs[0].shape[1])
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
    return x, lengths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout_s: float = 120) -> None:
    """Poll `url` until it answers 200; fail with the end of `log` if the process dies first."""
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            stop(process)
            raise RuntimeError(f"{url} did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    """Stop a server started with start_new_session=True: its process group, by its pid."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def start_mlflow_server(root: Path, artifacts: str,
                        env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, artifacts proxied to `artifacts`,
    a folder or an s3:// URI); returns its URI and process, to be stopped with `stop`."""
    port = free_port()
    log = root / "server.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", artifacts, "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )
    uri = f"http://127.0.0.1:{port}"
    wait_healthy(process, uri + "/health", log)
    return uri, process


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a sqlite backend; stopped by its process id."""
    root = tmp_path_factory.mktemp("mlflow-server")
    uri, process = start_mlflow_server(root, str(root / "artifacts"))
    yield uri
    stop(process)


# A real S3 endpoint on loopback (moto's server mode); any key pair is accepted by it.
S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "recur-test-access", "AWS_SECRET_ACCESS_KEY": "recur-test-secret-7f3a9c",
               "AWS_DEFAULT_REGION": "us-east-1"}


def start_moto(log: Path, env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
    """moto's S3 server on 127.0.0.1; returns its URL and process, to be stopped with `stop`."""
    port = free_port()
    with open(log, "w") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                                    "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    wait_healthy(process, url + "/moto-api/", log, timeout_s=60)
    return url, process


def point_at_s3(monkeypatch, url: str, env: dict[str, str] = S3_TEST_ENV) -> None:
    """This test's environment on the endpoint `url`, with AWS_* variables as users set them."""
    for key, value in {**env, "AWS_ENDPOINT_URL": url}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def s3_endpoint(tmp_path, monkeypatch):
    """moto's S3 server on 127.0.0.1 with this test's environment pointing at it (endpoint and
    credentials in AWS_* variables); stopped by its process id."""
    url, process = start_moto(tmp_path / "moto.log")
    try:
        point_at_s3(monkeypatch, url)
        yield url
    finally:
        stop(process)
