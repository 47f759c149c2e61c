"""The tune commands of docs/hyperparameter-search.md, word for word, as a new user runs them:
from a fresh folder holding only the shipped configs (relative paths everywhere), with another Ray
instance running on the machine, interrupted with Ctrl-C and continued with `--resume`.

Given a second Ray (started here, stopped by its process group), when `recur tune
configs/quickstart.yaml configs/tune-quickstart.yaml` (fewer trials, epochs and workers through
--set) gets SIGINT while its first trial trains, then it exits 130 with the tune step recorded as
interrupted; and `recur tune ... --resume` finishes the same study: every trial completed or
was stopped by its scheduler, exit 0, the step succeeded, the model is registered, and no Ray
process complained about the other instance.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, free_port, stop

pytestmark = pytest.mark.slow

# that page's two commands, with a smaller study: 2 trials, 2 epochs (ASHA stops a trial whose
# train.min_steps asks for more at its max_t), each trial a worker group of one Ray Train worker:
# still Train's controller and worker group inside a Tune trial beside another Ray (what this test
# is about), without a second worker process per trial; 2-worker DDP is tested in tests/training
README = ["tune", "configs/quickstart.yaml", "configs/tune-quickstart.yaml"]
SMALLER = ["--set", "tune.num_samples=2", "--set", "train.epochs=2", "--set", "tune.scheduler.max_t=2",
           "--set", "resources.num_workers=1"]


def _env() -> dict[str, str]:
    """A user's environment: no RAY_ADDRESS (recur starts its own Ray), no tracking server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "RECUR_"))}
    return {**env, "RECUR_PROGRESS": "plain"}


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the second Ray exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the second Ray's GCS never listened on {port}")


@pytest.fixture
def another_ray(tmp_path):
    """A second Ray instance on this machine, as another user's or a notebook's would be."""
    port = free_port()
    with open(tmp_path / "other-ray.log", "w") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port),
             "--num-cpus", "1", "--include-dashboard", "false", "--disable-usage-stats"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_env())
    try:
        _wait_for_port(port, process)
        yield port
    finally:
        # its process group: the head's GCS, raylet and workers. `ray start --block` takes over 15 s
        # to act on SIGTERM, and nothing of this head is needed after the test: SIGKILL at once.
        stop(process, grace_s=0)


def _recur(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([str(Path(sys.executable).parent / "recur"), *args], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, env=_env())


def _step_records(runs: Path, step: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in runs.glob(f"steps/**/{step}-*.json")]


def test_readme_tune_command_from_a_fresh_folder_beside_another_ray(another_ray, tmp_path):
    fresh = tmp_path / "fresh"
    shutil.copytree(REPO / "configs", fresh / "configs")
    first, second = tmp_path / "first.log", tmp_path / "resume.log"

    process = _recur([*README, *SMALLER], fresh, first)
    try:
        deadline = time.time() + 600
        while "epoch 1/" not in first.read_text():  # a trial is training, past its first epoch
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"no trial trained an epoch (exit {process.poll()}):\n"
                            f"{first.read_text()[-4000:]}")
            time.sleep(0.25)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        assert process.wait(timeout=180) == 130, first.read_text()[-4000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = first.read_text()
    assert "recur: interrupted" in text and "`recur tune CONFIG --resume` continues it" in text, text[-3000:]
    runs = fresh / "recur-runs"
    assert [r["status"] for r in _step_records(runs, "tune")] == ["interrupted"]
    (study,) = (runs / "tune").iterdir()

    process = _recur([*README, "--resume", *SMALLER], fresh, second)
    try:
        code = process.wait(timeout=900)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = second.read_text()
    assert code == 0, text[-4000:]
    assert "recur tune finished: study " + study.name in text and "became @champion" in text
    outcomes = json.loads((study / "trial_outcomes.json").read_text())["trials"]
    assert len(outcomes) == 2, outcomes
    assert {o["status"] for o in outcomes.values()} <= {"completed", "stopped by scheduler"}, outcomes
    assert [r["status"] for r in _step_records(runs, "tune")] == ["succeeded"]  # the same step, finished
    assert (runs / "mlflow.db").exists()  # relative paths meant the folder recur ran in
    for log in (first, second):
        assert "multiple active Ray instances" not in log.read_text()
