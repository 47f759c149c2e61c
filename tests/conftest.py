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
        ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=free_port(), log_to_driver=True)
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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a sqlite backend; stopped by its process id."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 (closed after the server stops)
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()
