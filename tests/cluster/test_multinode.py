"""A real two-node Ray cluster on this machine, a job submitted to it with `recur submit`.

Given a head node and a second node started with `ray start` (each with its own CPUs, ports and
temp dir, token authentication on), a real `mlflow server` and a tiny dataset, when
`recur submit CONFIG --follow` runs the pipeline with 2 Train workers and
`resources.placement_strategy=SPREAD`, then the job SUCCEEDED, the model is registered as
@champion, and Ray's State API shows the two Train workers on the two different nodes.

The cluster is stopped by the process groups of the two `ray start --block` processes (they take
their Ray processes down with them) and a sweep of what still runs under this cluster's temp
dir, never by `ray stop`, which would stop every Ray on the machine, including the in-process
Ray that other tests of the session use.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, make_toy_dataset

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "tests" / "cluster" / "multinode.yaml"
VENV_BIN = str(Path(sys.executable).parent)


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ray setting (an in-process Ray of another test
    sets RAY_ADDRESS and RAY_AUTH_MODE here), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is this venv's
    env.update(extra)
    return env


class LocalCluster:
    """Ray nodes started by `ray start --block`, each in its own process group."""

    def __init__(self) -> None:
        # Unix socket paths under the temp dir must stay short: /tmp/rcXXXXXXXX, not pytest's tmp_path
        self.root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
        self.token_file = self.root / "auth_token"
        self.token_file.write_text(secrets.token_hex(32))
        self.gcs_port = free_port()
        # RAY_ADDRESS: Ray processes that look for "the" local cluster (Train's placement group
        # cleaner does) must find this one, not another Ray running on the machine
        self.env = _clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_file),
                              RAY_USAGE_STATS_ENABLED="0", RAY_ADDRESS=f"127.0.0.1:{self.gcs_port}",
                              RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")  # stop at once on SIGTERM
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: list[tuple[str, subprocess.Popen]] = []

    def start_node(self, name: str, *, head: bool, num_cpus: int) -> None:
        ports = {flag: free_port() for flag in (
            "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")}
        command = [f"{VENV_BIN}/ray", "start", "--block", "--node-ip-address", "127.0.0.1",
                   "--num-cpus", str(num_cpus), "--num-gpus", "0", "--object-store-memory", str(200 * 2**20),
                   "--temp-dir", str(self.root / name), "--min-worker-port", "0", "--max-worker-port", "0",
                   "--disable-usage-stats", *(str(x) for kv in ports.items() for x in kv)]
        if head:
            command += ["--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                        "--dashboard-port", str(self.dashboard_port),
                        "--ray-client-server-port", str(free_port())]
        else:
            command += ["--address", f"127.0.0.1:{self.gcs_port}"]
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 (the node's process holds it)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                   start_new_session=True)
        self.nodes.append((name, process))

    def request(self, path: str) -> dict:
        req = urllib.request.Request(self.address + path,
                                     headers={"Authorization": f"Bearer {self.token_file.read_text()}"})
        with urllib.request.urlopen(req, timeout=10) as response:
            return json.loads(response.read())

    def alive_nodes(self) -> list[dict]:
        try:
            data = self.request("/api/v0/nodes?limit=100")
        except OSError:
            return []
        return [n for n in data["data"]["result"]["result"] if n["state"] == "ALIVE"]

    def wait_for_nodes(self, count: int, timeout_s: float = 180) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = self.alive_nodes()
            if len(nodes) >= count:
                return nodes
            for name, process in self.nodes:
                if process.poll() is not None:
                    raise RuntimeError(f"ray node {name} exited: {self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(nodes)} of {count} Ray nodes up after {timeout_s} s: "
                                   + " | ".join(self.log_tail(n) for n, _ in self.nodes))
            time.sleep(1)

    def log_tail(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        for _, process in reversed(self.nodes):  # the second node first, then the head
            _signal_group(process, signal.SIGTERM)
        for _, process in reversed(self.nodes):
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=10)
        _kill_leftovers(self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _kill_leftovers(root: Path) -> None:
    """SIGKILL processes that still run under `root` (command line or working dir): Ray's own
    processes of this cluster and a job's driver, nothing else on the machine."""
    mine = str(root)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if mine in cmdline or cwd.startswith(mine):
            with contextlib.suppress(OSError):
                os.kill(int(proc.name), signal.SIGKILL)


@pytest.fixture
def two_node_cluster():
    cluster = LocalCluster()
    started = time.monotonic()
    try:
        # the head keeps CPU free for Ray Data's read tasks next to its Train worker
        cluster.start_node("head", head=True, num_cpus=2)
        cluster.wait_for_nodes(1)
        cluster.start_node("node2", head=False, num_cpus=1)
        cluster.wait_for_nodes(2)
        print(f"\ntwo-node Ray cluster up in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        stopping = time.monotonic()
        cluster.stop()
        print(f"\ncluster stopped in {time.monotonic() - stopping:.1f} s")


def _recur(args: list[str], cluster: LocalCluster, cwd: Path, mlflow_uri: str, timeout: int = 600):
    # like a user's shell: no RAY_AUTH_MODE, the cluster's token in a file that recur finds
    env = _clean_env(MLFLOW_TRACKING_URI=mlflow_uri, RAY_AUTH_TOKEN_PATH=str(cluster.token_file))
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _train_workers(cluster: LocalCluster) -> list[dict]:
    """RayTrainWorker actors of the cluster, dead ones included, from Ray's State API."""
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    saved = {k: os.environ.pop(k) for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS") if k in os.environ}
    try:  # explicit address and token: another test's in-process Ray must not answer
        client = StateApiClient(address=cluster.address,
                                headers={"Authorization": f"Bearer {cluster.token_file.read_text()}"})
        actors = client.list(StateResource.ACTORS,
                             options=ListApiOptions(filters=[("class_name", "=", "RayTrainWorker")],
                                                    detail=True, limit=1000),
                             raise_on_missing_output=False)
    finally:
        os.environ.update(saved)
    return [a if isinstance(a, dict) else a.__dict__ for a in actors]


def _epochs_logged(client, experiment: str) -> int:
    """How many epochs the (single) run of `experiment` has in MLflow so far."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id]) if found else []
    return len(client.get_metric_history(runs[0].info.run_id, "train_loss")) if runs else 0


def _submit_and_stop_node2(cluster: LocalCluster, node2: subprocess.Popen, args: list[str], cwd: Path,
                           mlflow_uri: str, experiment: str, log: Path) -> tuple[int, str, float]:
    """`recur submit --follow` with `args`; once the run's second epoch is in MLflow, the second
    node is stopped (SIGTERM to its `ray start`, as `ray stop` would). Returns the exit code, the
    output and when the node was stopped (seconds after submitting)."""
    from mlflow import MlflowClient

    env = _clean_env(MLFLOW_TRACKING_URI=mlflow_uri, RAY_AUTH_TOKEN_PATH=str(cluster.token_file))
    started = time.monotonic()
    with open(log, "w") as out:
        submit = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "submit", str(CONFIG), "--follow",
                                   "--working-dir", str(REPO), "--address", cluster.address, *args],
                                  cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        client, stopped_at = MlflowClient(mlflow_uri), None
        try:
            while submit.poll() is None and time.monotonic() - started < 600:
                if stopped_at is None and _epochs_logged(client, experiment) >= 2:
                    _signal_group(node2, signal.SIGTERM)
                    stopped_at = time.monotonic() - started
                    print(f"second node stopped {stopped_at:.1f} s after submitting")
                time.sleep(0.2)
            code = submit.wait(timeout=60)
        finally:
            if submit.poll() is None:
                submit.kill()
    assert stopped_at is not None, "the job ended before its second epoch was in MLflow"
    node2.wait(timeout=60)
    cluster.nodes = [(name, p) for name, p in cluster.nodes if p is not node2]  # stopped on purpose
    return code, log.read_text(), stopped_at


def test_a_job_spreads_over_two_nodes_and_survives_losing_one(two_node_cluster, mlflow_server, tmp_path,
                                                              capsys):
    """`recur submit` to a two-node cluster, then a fault: the second node stops mid-training.

    The job (submitted from the dataset's folder with relative paths, which recur resolves there)
    joins the cluster and places its 2 Train workers on the two nodes (SPREAD). When the second
    node stops (train.max_failures > 0) and what is left still fits the workers, Ray Train
    restarts the worker group on the head from the last checkpoint (on storage every node
    reaches) and the job succeeds: one MLflow run with every epoch once, in order, and the model
    @champion.
    """
    from mlflow import MlflowClient

    cluster = two_node_cluster
    nodes = {n["node_id"]: n for n in cluster.alive_nodes()}
    head = next(i for i, n in nodes.items() if n["is_head_node"])
    second = next(i for i in nodes if i != head)
    dataset = make_toy_dataset(tmp_path / "toy", n_train=1600, n_val=64, n_test=64)  # epochs of ~1 s
    epochs, model = 8, f"multinode-{secrets.token_hex(3)}"
    common = ["--set", "data.root=toy", "--set", f"train.epochs={epochs}", "--set", "train.max_failures=2",
              "--set", f"registry.model_name={model}", "--set", "resources.placement_strategy=SPREAD",
              "--set", "resources.start_timeout_s=15"]

    # what is left fits: 2 workers x 0.5 CPU + 0.5 for Ray Data on the head's 2 CPUs
    code, out, _ = _submit_and_stop_node2(
        cluster, cluster.nodes[1][1], [*common, "--set", "tracking.experiment=node-loss"], dataset.parent,
        mlflow_server, "node-loss", tmp_path / "continues.log")
    assert code == 0, out[-6000:]
    job_id = out.split("submitted job ", 1)[1].split()[0]
    assert f"job {job_id} SUCCEEDED" in out, out[-6000:]
    assert f"data.root          toy -> {dataset}" in out
    assert f"tracking.runs_dir  recur-runs -> {dataset.parent / 'recur-runs'}" in out
    assert "MLFLOW_TRACKING_URI (values not shown)" in out and mlflow_server not in out.split("--- logs")[0]
    assert "recur run finished" in out and f"{model} version 1: became @champion" in out
    # the job joined the cluster (RAY_ADDRESS) instead of starting a Ray of its own
    assert re.search(rf"using Ray cluster at [\d.]+:{cluster.gcs_port}\b", out), out[-6000:]
    assert "data.materialize=auto streams" in out  # blocks held by a lost node could not be rebuilt
    assert MlflowClient(mlflow_server).get_model_version_by_alias(model, "champion").version == "1"

    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("node-loss").experiment_id])
    for key in ("train_loss", "val_loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == list(range(epochs))
    # the first worker group spread over both nodes; the restarted one ran on the head
    workers = _train_workers(cluster)
    placement = sorted((w["node_id"], w["state"]) for w in workers)
    with capsys.disabled():  # in the test log even when output is captured: where the workers ran
        print(f"\ncluster: head node {head}, second node {second}")
        print(f"job {job_id}: RayTrainWorker actors (node id, state):")
        for node_id, state in placement:
            print(f"  {node_id}  {'head' if node_id == head else 'second node'}  {state}")
    on_head = [w for w in workers if w["node_id"] == head]
    assert {w["node_id"] for w in workers} == {head, second}
    assert len(workers) >= 4 and len(on_head) >= 3
    # the checkpoints went to the submitting machine's runs_dir, which every node reaches
    assert list((dataset.parent / "recur-runs" / "ray").glob("*/checkpoint_*"))

    # `recur jobs` sees the job
    listed = _recur(["jobs", "list", "--address", cluster.address], cluster, tmp_path, mlflow_server, 120)
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout
    status = _recur(["jobs", "status", job_id, "--address", cluster.address], cluster, tmp_path,
                    mlflow_server, 120)
    assert status.returncode == 0 and f"{job_id}  SUCCEEDED" in status.stdout, status.stderr
    logs = _recur(["jobs", "logs", job_id, "--address", cluster.address], cluster, tmp_path,
                  mlflow_server, 120)
    assert logs.returncode == 0 and "recur run finished" in logs.stdout, logs.stderr

    # token authentication is on: the Jobs API refuses a request without the token or with another
    # one, and recur says which (the token it found was not accepted)
    for headers in ({}, {"Authorization": f"Bearer {secrets.token_hex(32)}"}):
        request = urllib.request.Request(f"{cluster.address}/api/jobs/", headers=headers)
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code in (401, 403), answer.value
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    env = _clean_env(MLFLOW_TRACKING_URI=mlflow_server, RAY_AUTH_TOKEN_PATH=str(wrong))
    refused = subprocess.run([sys.executable, "-m", "pipeline.cli", "jobs", "list",
                              "--address", cluster.address], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "uses token authentication" in refused.stderr, refused.stderr
    assert job_id not in refused.stdout
    with capsys.disabled():
        print(f"token auth: /api/jobs/ without a token -> HTTP 401/403, another token -> refused; "
              f"recur jobs list with a wrong token -> exit {refused.returncode}: "
              f"{refused.stderr.strip().splitlines()[-1][:160]}")

    # `recur run` joining the cluster by its GCS address, as a user's shell would (the cluster's
    # token in a file, no RAY_AUTH_MODE): refused in seconds with what to do (before: 20 s of
    # authentication errors from Ray's core, then a traceback)
    env = _clean_env(MLFLOW_TRACKING_URI=mlflow_server, RAY_AUTH_TOKEN_PATH=str(cluster.token_file),
                     RAY_ADDRESS=f"127.0.0.1:{cluster.gcs_port}")
    started = time.monotonic()
    joined = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(CONFIG), "--set",
                             "data.root=toy", "--set", f"registry.model_name={model}"], cwd=dataset.parent,
                            env=env, capture_output=True, text=True, timeout=300)
    last = joined.stderr.strip().splitlines()[-1]
    assert joined.returncode == 2 and "Traceback" not in joined.stderr, joined.stderr[-3000:]
    where = f"127.0.0.1:{cluster.gcs_port} (RAY_ADDRESS)"
    assert last.startswith(f"recur: error: the Ray cluster at {where} uses token authentication and "
                           "Ray sends no token unless RAY_AUTH_MODE=token"), last
    with capsys.disabled():
        print(f"recur run against the token cluster without RAY_AUTH_MODE: exit {joined.returncode} in "
              f"{time.monotonic() - started:.1f} s: {last[:160]}")
