"""What `recur submit` sends, without a cluster: paths resolved on the submitting machine, the
entry point's argv, and the jobs a remote cluster could not run."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cluster.submission import (
    LocalizedPath,
    config_args,
    localize_paths,
    plan_job,
)
from pipeline.config import ConfigError, RecurConfig, load_config, parse_override
from pipeline.errors import CommandError

REPO = Path(__file__).resolve().parents[2]
LOCAL = "http://127.0.0.1:8265"
REMOTE = "http://10.1.2.3:8265"


def _cfg(**sections) -> RecurConfig:
    return RecurConfig.model_validate(sections)


def test_relative_paths_resolve_against_the_submitting_folder(tmp_path):
    cfg = _cfg(data={"root": "data/toy", "source": {"format": "ts", "paths": [
        "builtin://JapaneseVowels/JapaneseVowels_TRAIN.ts", "raw/x_TEST.ts", "/abs/y_TRAIN.ts",
        "file://raw/z.ts"]}},
        tracking={"runs_dir": "runs", "tracking_uri": "sqlite:///runs/mlflow.db"})
    found = {p.key: p for p in localize_paths(cfg, base=tmp_path, environ={})}
    assert found["data.root"] == LocalizedPath("data.root", "data/toy", str(tmp_path / "data/toy"))
    assert found["tracking.runs_dir"].value == str(tmp_path / "runs")
    assert found["tracking.tracking_uri"].value == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert found["tracking.tracking_uri"].value.startswith("sqlite:////")  # four slashes: absolute
    # builtin sources travel with the uploaded code; absolute ones are kept as they are
    assert found["data.source.paths"].value == [
        "builtin://JapaneseVowels/JapaneseVowels_TRAIN.ts", str(tmp_path / "raw/x_TEST.ts"),
        "/abs/y_TRAIN.ts", str(tmp_path / "raw/z.ts")]


def test_absolute_paths_and_servers_are_left_alone(tmp_path):
    cfg = _cfg(data={"root": "/data/toy"}, tracking={"runs_dir": "/srv/runs",
                                                     "tracking_uri": "http://mlflow:5000"})
    assert localize_paths(cfg, base=tmp_path, environ={}) == []
    cfg = _cfg(data={"root": "/data/toy"}, tracking={"runs_dir": "/srv/runs",
                                                     "tracking_uri": "sqlite:////srv/runs/mlflow.db"})
    assert localize_paths(cfg, base=tmp_path, environ={}) == []


def test_a_relative_store_in_the_environment_becomes_an_absolute_override(tmp_path):
    cfg = _cfg(data={"root": "/d"}, tracking={"runs_dir": "/r"})
    found = localize_paths(cfg, base=tmp_path, environ={"MLFLOW_TRACKING_URI": "sqlite:///m.db"})
    assert found == [LocalizedPath("tracking.tracking_uri", "sqlite:///m.db", f"sqlite:///{tmp_path}/m.db")]
    found = localize_paths(cfg, base=tmp_path, environ={"MLFLOW_TRACKING_URI": "mlruns"})
    assert found[0].value == str(tmp_path / "mlruns")
    assert localize_paths(cfg, base=tmp_path, environ={"MLFLOW_TRACKING_URI": "http://h:5000"}) == []


def test_overrides_parse_back_to_the_same_values():
    # JSON-quoted, so a path that YAML would read as something else stays what it was
    for value in ("/tmp/a: b", "/srv/yes #1", "/srv/123", ["builtin://x", "/a b/c"]):
        keys, parsed = parse_override(LocalizedPath("data.root", "x", value).override)
        assert keys == ["data", "root"] and parsed == value
    assert load_config([], [LocalizedPath("data.root", "x", "/tmp/a: b").override]).data.root == "/tmp/a: b"


def test_configs_must_be_uploaded_with_the_working_dir(tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "recur-runs").mkdir()
    inside = tmp_path / "configs" / "a.yaml"
    ignored = tmp_path / "recur-runs" / "b.yaml"
    for p in (inside, ignored):
        p.write_text("{}\n")
    assert config_args([str(inside)], tmp_path) == ["configs/a.yaml"]
    with pytest.raises(CommandError, match="outside the working dir"):
        config_args([str(inside)], tmp_path / "configs" / "elsewhere")
    with pytest.raises(CommandError, match="not uploaded"):
        config_args([str(ignored)], tmp_path)
    (tmp_path / ".gitignore").write_text("private/\n")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "c.yaml").write_text("{}\n")
    with pytest.raises(CommandError, match="not uploaded"):
        config_args([str(tmp_path / "private" / "c.yaml")], tmp_path)


def test_plan_for_a_local_cluster():
    plan = plan_job(["configs/quickstart.yaml"], ["train.epochs=3", "data.root=my/data"], entry="run",
                    address=LOCAL, working_dir=str(REPO), environ={}, cwd=REPO)
    argv = plan.entrypoint
    assert argv[:4] == ["python", "jobs/run_pipeline.py", "--config", "configs/quickstart.yaml"]
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    # the user's relative data.root is replaced by its absolute form; other overrides are kept
    assert sets == ["train.epochs=3", f'data.root="{REPO}/my/data"', f'tracking.runs_dir="{REPO}/recur-runs"']
    assert plan.warnings == []
    assert plan.metadata == {"recur_entry": "run", "recur_configs": "configs/quickstart.yaml"}
    assert plan.submission_id.startswith("recur-run-")
    assert plan.config.train.epochs == 3


@pytest.mark.parametrize("entry, script", [("train", "jobs/train.py"), ("tune", "jobs/tune.py")])
def test_plan_runs_the_entry_script(entry, script):
    plan = plan_job(["configs/quickstart.yaml", "configs/tune-quickstart.yaml"], [], entry=entry,
                    address=LOCAL, working_dir=str(REPO), extra_args=["--resume"], environ={}, cwd=REPO)
    assert plan.entrypoint[:2] == ["python", script]
    assert plan.entrypoint.count("--config") == 2 and plan.entrypoint[-1] == "--resume"


def test_plan_refuses_what_could_not_work(tmp_path):
    with pytest.raises(CommandError, match="jobs/run_pipeline.py is not in the working dir"):
        plan_job([str(REPO / "configs/quickstart.yaml")], [], address=LOCAL, working_dir=str(tmp_path),
                 environ={}, cwd=REPO)
    with pytest.raises(ConfigError, match="train.epochs"):
        plan_job(["configs/quickstart.yaml"], ["train.epochs=-1"], address=LOCAL, working_dir=str(REPO),
                 environ={}, cwd=REPO)
    with pytest.raises(CommandError, match="unknown entry"):
        plan_job(["configs/quickstart.yaml"], [], entry="nope", address=LOCAL, working_dir=str(REPO),
                 environ={}, cwd=REPO)


def test_remote_cluster_needs_a_tracking_server_and_shared_paths():
    # the default store is a sqlite file: on a remote cluster it would land on the nodes' disks
    with pytest.raises(CommandError, match="local MLflow store .*MLFLOW_TRACKING_URI"):
        plan_job(["configs/quickstart.yaml"], [], address=REMOTE, working_dir=str(REPO), environ={}, cwd=REPO)
    with pytest.raises(CommandError, match="local MLflow store"):
        plan_job(["configs/quickstart.yaml"], [], address=REMOTE, working_dir=str(REPO),
                 environ={"MLFLOW_TRACKING_URI": "sqlite:///x.db"}, cwd=REPO)
    # a server is fine; the resolved paths come with a warning each
    plan = plan_job(["configs/quickstart.yaml"], [], address=REMOTE, working_dir=str(REPO),
                    environ={"MLFLOW_TRACKING_URI": "http://mlflow.internal:5000"}, cwd=REPO)
    assert [w.split(":")[0] for w in plan.warnings] == ["data.root", "tracking.runs_dir"]
    assert all("every node" in w for w in plan.warnings)
    # a server on 127.0.0.1 means each node itself, and an explicit shared sqlite gets a warning
    plan = plan_job(["configs/quickstart.yaml"], [], address=REMOTE, working_dir=str(REPO),
                    environ={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, cwd=REPO)
    assert "names 127.0.0.1" in plan.warnings[0]
    plan = plan_job(["configs/quickstart.yaml"], ["tracking.tracking_uri=sqlite:////shared/m.db"],
                    address=REMOTE, working_dir=str(REPO), environ={}, cwd=REPO)
    assert "shared by every node" in plan.warnings[0]


def test_predict_takes_its_own_arguments_with_local_paths_resolved():
    args = ["japanese-vowels@champion", "--data", "recur-runs/datasets/jv", "--out=preds",
            "--batch-size", "64"]
    plan = plan_job(["configs/quickstart.yaml"], [], entry="predict", address=LOCAL, working_dir=str(REPO),
                    extra_args=args, environ={}, cwd=REPO)
    # the configs give predict only its MLflow store, as its own options
    assert plan.entrypoint == [
        "python", "jobs/predict.py", "japanese-vowels@champion", "--data", f"{REPO}/recur-runs/datasets/jv",
        f"--out={REPO}/preds", "--batch-size", "64", "--config", "configs/quickstart.yaml",
        "--runs-dir", f"{REPO}/recur-runs"]
    # no config; absolute paths, URIs and predict's own --runs-dir are kept as they are
    args = ["m", "--data", "/d", "--out", "s3://bucket/p", "--runs-dir", "/srv/runs"]
    plan = plan_job([], [], entry="predict", address=LOCAL, working_dir=str(REPO), extra_args=args,
                    environ={}, cwd=REPO)
    assert plan.entrypoint == ["python", "jobs/predict.py", *args]


def test_predict_arguments_are_checked_before_submitting():
    with pytest.raises(CommandError, match="--entry predict: the following arguments are required: --out"):
        plan_job([], [], entry="predict", address=LOCAL, working_dir=str(REPO),
                 extra_args=["m", "--data", "/d"], environ={}, cwd=REPO)
    with pytest.raises(CommandError, match="--set does not apply to --entry predict"):
        plan_job([], ["train.lr=0.1"], entry="predict", address=LOCAL, working_dir=str(REPO),
                 extra_args=["m", "--data", "/d", "--out", "/o"], environ={}, cwd=REPO)
    with pytest.raises(CommandError, match="--entry run needs at least one CONFIG"):
        plan_job([], [], entry="run", address=LOCAL, working_dir=str(REPO), environ={}, cwd=REPO)
    # on a remote cluster predict needs a registry it can reach, like training does
    with pytest.raises(CommandError, match="local MLflow store"):
        plan_job([], [], entry="predict", address=REMOTE, working_dir=str(REPO),
                 extra_args=["m", "--data", "/d", "--out", "/o"], environ={}, cwd=REPO)
