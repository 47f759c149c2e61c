"""`recur schedule` (and `recur submit`, `recur jobs stop`) against a real Ray head
(`ray start --head`) and its Jobs API.

The submitted jobs are tiny real commands (`--entrypoint`), not trainings: what is tested is
when the scheduler submits, skips, stops and records. The head is started by this module and
stopped by the process ids it started (never a bare `ray stop`, which would stop other tests'
Ray too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from conftest import free_port, make_toy_dataset

from pipeline.cli import main
from pipeline.data.dataset import read_manifest

pytestmark = pytest.mark.slow

QUICK = "python -c \"print('retrained')\""
SLEEPY = "python -c \"import time; time.sleep(90)\""  # bounded: a leaked driver ends by itself


@pytest.fixture(scope="module")
def ray_head():
    from pipeline.cluster import ClusterError, list_jobs

    temp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's socket paths have a length limit
    dashboard = free_port()
    ports = {"--port": free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
             "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
             "--node-manager-port": free_port(), "--object-manager-port": free_port()}
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--num-cpus", "1",
               "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--temp-dir", temp,
               "--disable-usage-stats", *[str(a) for kv in ports.items() for a in kv]]
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115 (closed after the head stops)
    # --block keeps `ray start` in the foreground as the leader of a new process group holding
    # every Ray process of this head, so it is stopped by that group's id alone.
    # the jobs' `python` is this venv's, as for a user who started the head from an activated venv
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    address = f"http://127.0.0.1:{dashboard}"
    deadline = time.monotonic() + 120
    while True:
        try:
            list_jobs(address=address)
            break
        except ClusterError as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                os.killpg(process.pid, signal.SIGKILL)
                log_text = (Path(temp) / "head.log").read_text()[-3000:]
                raise RuntimeError(f"ray head did not start ({exc}): {log_text}") from None
            time.sleep(0.5)
    yield address
    process.terminate()  # the leader shuts its processes down; the group is killed if it hangs
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    log.close()
    shutil.rmtree(temp, ignore_errors=True)


def _config(tmp_path: Path, root: Path) -> str:
    path = tmp_path / "schedule.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"root": str(root)},
        "registry": {"model_name": "sched-toy"},
        "tracking": {"runs_dir": str(tmp_path / "runs")},
        "resources": {"num_workers": 0},  # one rank in the job's driver: the triggers are the subject
    }))
    return str(path)


def _schedule(capsys, *args: str) -> str:
    code = main(["schedule", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def _jobs(address: str, **metadata: str) -> list[dict]:
    """This module's jobs whose metadata has these values."""
    from pipeline.cluster import list_jobs

    return [j for j in list_jobs(address=address)
            if (j.get("metadata") or {}).get("recur_model") == "sched-toy"
            and all(j["metadata"].get(f"recur_{k}") == v for k, v in metadata.items())]


def _wait_for(address: str, job_id: str, statuses: set[str], timeout: float = 90) -> str:
    from pipeline.cluster import job_status

    deadline = time.monotonic() + timeout
    while (status := job_status(job_id, address=address)) not in statuses:
        assert time.monotonic() < deadline, f"job {job_id} is still {status}"
        time.sleep(0.5)
    return status


def _job_id(out: str) -> str:
    return out.split("-> job ")[1].split()[0]


def test_on_new_data_fires_once_per_data_version_across_restarts(ray_head, tmp_path, capsys):
    root = make_toy_dataset(tmp_path / "data", seed=1)
    v1 = read_manifest(str(root)).data_hash
    work = tmp_path / "work"
    work.mkdir()
    (work / "README").write_text("the job's working dir\n")
    config = _config(tmp_path, root)
    args = [config, "--on-new-data", "--once", "--address", ray_head,
            "--working-dir", str(work), "--entrypoint", QUICK]

    out = _schedule(capsys, *args)
    assert f"fired new data version {v1[:12]}" in out
    first = _job_id(out)
    [job] = _jobs(ray_head, configs=config)
    assert job["submission_id"] == first and first.startswith("recur-sched-toy-") and v1[:12] in first
    assert job["metadata"]["recur_trigger"] == "new-data" and job["metadata"]["recur_data_hash"] == v1
    [state] = (tmp_path / "runs" / "schedules").glob("sched-toy-*.json")  # the default state file

    # a restarted scheduler (a new process would read the same file) does not fire again
    out = _schedule(capsys, *args)
    assert f"no new data: version {v1[:12]} already submitted (job {first}" in out
    assert len(_jobs(ray_head, configs=config)) == 1

    # crashed after submitting but before saving its state: the job is found, not submitted twice
    state.unlink()
    out = _schedule(capsys, *args)
    assert f"job {first} for this trigger already exists on the cluster" in out
    assert len(_jobs(ray_head, configs=config)) == 1
    assert _wait_for(ray_head, first, {"SUCCEEDED", "FAILED"}) == "SUCCEEDED"
    assert "(job " + first + ": SUCCEEDED)" in _schedule(capsys, *args)

    # new data (re-imported with other rows): exactly one more job
    make_toy_dataset(root, seed=2)
    v2 = read_manifest(str(root)).data_hash
    assert v2 != v1
    out = _schedule(capsys, *args)
    assert f"fired new data version {v2[:12]}" in out
    assert len(_jobs(ray_head, data_hash=v2)) == 1
    assert "no new data" in _schedule(capsys, *args)
    assert len(_jobs(ray_head, configs=config)) == 2


def test_forbid_skips_while_a_job_runs_and_replace_stops_it(ray_head, tmp_path, capsys):
    from pipeline.cluster import job_status

    root = make_toy_dataset(tmp_path / "data", seed=3)
    work = tmp_path / "work"
    work.mkdir()
    common = [_config(tmp_path, root), "--on-new-data", "--once", "--address", ray_head,
              "--state", str(tmp_path / "state.json"), "--working-dir", str(work)]

    running = _job_id(_schedule(capsys, *common, "--entrypoint", SLEEPY))
    assert _wait_for(ray_head, running, {"RUNNING", "FAILED", "SUCCEEDED"}) == "RUNNING"

    make_toy_dataset(root, seed=4)
    v4 = read_manifest(str(root)).data_hash
    out = _schedule(capsys, *common, "--entrypoint", SLEEPY)
    assert f"skipped new data version {v4[:12]}: job {running} is RUNNING (policy forbid" in out
    assert not _jobs(ray_head, data_hash=v4)
    assert job_status(running, address=ray_head) == "RUNNING"

    out = _schedule(capsys, *common, "--entrypoint", QUICK, "--policy", "replace")
    assert f"replacing job {running} (RUNNING, policy replace)" in out
    assert f"stopped job {running} (STOPPED)" in out
    assert job_status(running, address=ray_head) == "STOPPED"
    [replacement] = _jobs(ray_head, data_hash=v4)
    assert replacement["submission_id"] == _job_id(out)
    assert "no new data" in _schedule(capsys, *common, "--entrypoint", QUICK, "--policy", "replace")
    assert len(_jobs(ray_head, data_hash=v4)) == 1


def test_cron_fires_once_for_missed_times(ray_head, tmp_path):
    """The loop with a clock that jumps: the scheduler was down over three fire times."""
    from pipeline.scheduling.decide import Triggers
    from pipeline.scheduling.scheduler import JobSpec, Scheduler, parse_entrypoint
    from pipeline.scheduling.state import load_state
    from pipeline.scheduling.watch import DatasetWatcher, LocalStore

    root = make_toy_dataset(tmp_path / "data", seed=5)
    now = [datetime(2025, 1, 1, 12, tzinfo=timezone.utc)]
    lines: list[str] = []
    job = JobSpec(entrypoint=parse_entrypoint(QUICK), model_name="sched-toy", key="crontest",
                  configs=["schedule.yaml"], address=ray_head, working_dir=str(tmp_path))
    scheduler = Scheduler(Triggers(cron="0 3 * * *"), tmp_path / "cron.json", job,
                          DatasetWatcher(LocalStore(str(root))), clock=lambda: now[0], say=lines.append)
    assert scheduler.tick().action == "wait"
    assert any("next cron fire at 2025-01-02T03:00:00Z" in line for line in lines)

    now[0] = datetime(2025, 1, 5, 12, tzinfo=timezone.utc)
    decision = scheduler.tick()
    assert decision.action == "submit" and decision.missed == 3
    [job_info] = _jobs(ray_head, schedule="crontest")
    assert job_info["metadata"]["recur_trigger"] == "cron"
    assert job_info["metadata"]["recur_fire_time"] == "2025-01-05T03:00:00Z"
    assert job_info["submission_id"] == "recur-sched-toy-crontest-cron-20250105t030000z-" + \
        read_manifest(str(root)).data_version
    assert load_state(tmp_path / "cron.json").next_fire == datetime(2025, 1, 6, 3, tzinfo=timezone.utc)

    now[0] = datetime(2025, 1, 5, 12, 1, tzinfo=timezone.utc)
    assert scheduler.tick().action == "wait"
    assert len(_jobs(ray_head, schedule="crontest")) == 1


def test_on_new_data_watches_an_s3_dataset(ray_head, s3_endpoint, tmp_path, capsys):
    """`--on-new-data` on `s3://` (moto's server on loopback): one job per data version, and the
    job, run by the cluster, reads the same dataset through the AWS_* settings recur forwards."""
    import boto3

    from pipeline.cluster import job_logs

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="recur-sched")
    root = "s3://recur-sched/data/toy"
    make_toy_dataset(root, seed=6)
    v1 = read_manifest(root).data_hash
    work = tmp_path / "work"
    work.mkdir()
    reads = (f"{sys.executable} -c \"from pipeline.data.dataset import read_manifest; "
             f"print(read_manifest('{root}').data_hash)\"")
    args = [_config(tmp_path, root), "--on-new-data", "--once", "--address", ray_head,
            "--state", str(tmp_path / "s3.json"), "--working-dir", str(work), "--entrypoint", reads]

    out = _schedule(capsys, *args)
    assert f"new data at {root};" in out and f"fired new data version {v1[:12]}" in out
    first = _job_id(out)
    status = _wait_for(ray_head, first, {"SUCCEEDED", "FAILED"})
    assert status == "SUCCEEDED", job_logs(first, address=ray_head)
    assert v1 in job_logs(first, address=ray_head)
    assert "no new data" in _schedule(capsys, *args)

    make_toy_dataset(root, seed=7)
    v2 = read_manifest(root).data_hash
    out = _schedule(capsys, *args)
    assert f"fired new data version {v2[:12]}" in out
    assert [j["submission_id"] for j in _jobs(ray_head, data_hash=v2)] == [_job_id(out)]
    assert "no new data" in _schedule(capsys, *args)


def test_submit_follow_fails_with_the_job_and_jobs_stop_stops_one(ray_head, tmp_path, capsys):
    """`recur submit --follow` of a run whose dataset is missing on the cluster: the job FAILED,
    the command exits 1 with the job's reason; `recur jobs stop` stops a running job."""
    from pipeline.cluster import job_status, submit_job
    from pipeline.scheduling.scheduler import parse_entrypoint

    work = tmp_path / "work"
    shutil.copytree(Path(__file__).resolve().parents[2] / "jobs", work / "jobs")
    missing = tmp_path / "not-imported"
    missing.mkdir()
    config = work / "run.yaml"
    config.write_text(yaml.safe_dump({"data": {"root": str(missing)}, "registry": {"model_name": "sched-toy"},
                                      "tracking": {"runs_dir": str(tmp_path / "runs")}}))
    code = main(["submit", str(config), "--address", ray_head, "--working-dir", str(work), "--follow"])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    job_id = out.split("submitted job ", 1)[1].split()[0]
    assert f"--- job {job_id} FAILED ---" in out
    assert f"no manifest.json in {missing}" in out  # the job's own log: it failed where expected
    assert f"recur: job {job_id} FAILED" in err

    running = submit_job(parse_entrypoint(SLEEPY), address=ray_head, working_dir=str(work))
    assert _wait_for(ray_head, running, {"RUNNING", "FAILED", "SUCCEEDED"}) == "RUNNING"
    assert main(["jobs", "stop", running, "--address", ray_head]) == 0
    assert f"asked job {running} to stop" in capsys.readouterr().out
    assert _wait_for(ray_head, running, {"STOPPED", "FAILED", "SUCCEEDED"}) == "STOPPED"
    assert main(["jobs", "stop", running, "--address", ray_head]) == 0
    assert f"job {running} had already ended: STOPPED" in capsys.readouterr().out
    assert job_status(running, address=ray_head) == "STOPPED"
