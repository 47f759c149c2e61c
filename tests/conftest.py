"""Shared fixtures: a real local Ray, tiny canonical datasets, a real MLflow server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipeline.ports import free_port

REPO = Path(__file__).resolve().parents[1]

# Fixtures that start a real service: a test using one is in the slow tier (`-m slow`) whatever
# its module says, so `pytest -m "not slow"` starts no Ray, MLflow server or Train worker.
SERVICE_FIXTURES = {"ray_local", "mlflow_server", "champion"}


# Parallel runs (`pytest -n 2`, the README's test command): pytest-xdist's loadgroup mode sends
# each group below to one worker, in order, and spreads every other test over all workers (the
# groups, its largest work units, go out first). Each worker is a process with its own session
# fixtures: a test on `ray_local` gets that worker's Ray, started when the worker first needs it.
# - "champion": tests of the session's trained and registered model share one training of it;
# - "ray-heads": tests that start Ray heads or clusters of their own with `ray start` (a second
#   Ray beside recur's, the multinode cluster, the Jobs head, infra/local/ray-head.sh) run one
#   after another: Ray gives a starting node 30 s to register with its GCS, which two heads
#   starting at once beside a training could miss on 2 cores.
# tests/test_harness.py checks that the installed pytest and pytest-xdist still honour the groups.
RAY_HEAD_MODULES = {"tests/tuning/test_tune_readme.py", "tests/cluster/test_multinode.py",
                    "tests/scheduling/test_schedule_end_to_end.py", "tests/infra/test_local_services.py"}


def xdist_group_of(item) -> str | None:
    """The group a test must run in under pytest-xdist, or None where any worker may take it."""
    if "champion" in getattr(item, "fixturenames", ()):
        return "champion"
    if Path(str(item.path)).relative_to(REPO).as_posix() in RAY_HEAD_MODULES:
        return "ray-heads"
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        group = xdist_group_of(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_configure(config):
    # each xdist worker's in-process Ray keeps its sockets and session logs in a folder of its own
    # (Ray's default, /tmp/ray, holds one `session_latest` link for every Ray on the machine)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and "RAY_TMPDIR" not in os.environ:
        folder = Path(f"/tmp/recur-{worker}")  # short: Ray's socket paths have a length limit
        folder.mkdir(exist_ok=True)
        os.environ["RAY_TMPDIR"] = str(folder)


@pytest.fixture(autouse=True)
def close_figures():
    """Figures a test draws itself (plot functions called directly) are closed after it, so pyplot
    does not hold them for the rest of the worker's tests and a test can check that a run it
    started left no figure open."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, shared by every test that trains."""
    import ray

    if not ray.is_initialized():
        from pipeline.workflow.session import start_local_ray

        # With the dashboard: Ray Train's PlacementGroupCleaner asks the State API (served by the
        # dashboard) whether a controller died, and frees its workers' placement group. Without
        # it, a Tune trial stopped by its scheduler would keep its workers' CPUs forever. The
        # cleaner finds this cluster by the RAY_ADDRESS that `start_local_ray` (recur's own way to
        # start a local Ray) gives every process Ray starts.
        address = start_local_ray(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                                  dashboard_port=free_port(), log_to_driver=True)
        assert ray.get_runtime_context().gcs_address.endswith(address.rpartition(":")[2])
    yield ray
    ray.shutdown()


def make_toy_dataset(root: Path, *, n_train=96, n_val=32, n_test=48, num_channels=3, seed=0) -> Path:
    """Two classes told apart by the sign of channel 0's mean; lengths 4..14."""
    from pipeline.data.dataset import make_table, write_dataset

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


@contextlib.contextmanager
def no_ray():
    """The block neither starts Ray nor joins one (an earlier test in this process may have left
    the session's Ray running, so `ray.is_initialized()` alone cannot tell): recur's one way to
    Ray, `connect_ray`, is watched (the real call, recorded)."""
    from unittest import mock

    import ray

    from pipeline.workflow import session

    before, connects, connect = ray.is_initialized(), [], session.connect_ray

    def watched(*args, **kwargs):
        connects.append(args)
        return connect(*args, **kwargs)

    with mock.patch.object(session, "connect_ray", watched):
        yield
    assert not connects and ray.is_initialized() == before


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


def stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Stop a server started with start_new_session=True: its process group, by its pid (SIGTERM,
    then SIGKILL after `grace_s`)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
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


CHAMPION_MODEL = "predict-toy"


@dataclass(frozen=True)
class Champion:
    """A model trained once per session by `recur run` and registered as @champion."""

    tracking_uri: str  # the shared `mlflow_server`
    dataset: Path  # the toy dataset it was trained on
    config: Path  # the config `recur run` ran
    runs_dir: Path  # its step records, checkpoints
    model: str = CHAMPION_MODEL

    def run_args(self, *overrides: str) -> list[str]:
        """`recur run` arguments that ran it (every step recorded), plus `--set` overrides."""
        sets = [f"data.root={self.dataset}", f"tracking.tracking_uri={self.tracking_uri}",
                f"tracking.runs_dir={self.runs_dir}", *overrides]
        return ["run", str(self.config), *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="session")
def champion(ray_local, mlflow_server, tmp_path_factory) -> Champion:
    """Version 1 of `predict-toy`, @champion on the shared `mlflow_server`: a tiny GRU trained one
    epoch on the toy data by the real pipeline. Share it instead of training another model;
    a test that changes its registry or records copies what it needs."""
    from pipeline.cli import main

    root = tmp_path_factory.mktemp("champion")
    dataset = make_toy_dataset(root / "toy")
    config = root / "champion.yaml"
    config.write_text(
        "model: {cell: gru, hidden_size: 8}\n"
        "train: {epochs: 1, lr: 0.01, early_stopping_patience: 0}\n"
        # one rank in this process: the model is all these tests need, without a worker group start
        "resources: {num_workers: 0}\n"
        "data: {batch_size: 16}\n"
        f"registry: {{model_name: {CHAMPION_MODEL}, metric: accuracy, min_improvement: 0.0}}\n"
        "tracking: {experiment: predict}\n"
    )
    found = Champion(tracking_uri=mlflow_server, dataset=dataset, config=config, runs_dir=root / "runs")
    assert main(found.run_args()) == 0
    return found


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
