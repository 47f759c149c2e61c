"""LocalRun: one rank in this process, with the Ray Train controller's part of each report."""

from __future__ import annotations

import math

from ray.train import Checkpoint

from pipeline.training.local import LocalRun


class Recorder:
    def __init__(self):
        self.calls = []

    def after_report(self, run_context, metrics, checkpoint):
        self.calls.append((run_context, metrics, checkpoint.path if checkpoint else None))


def _report(run: LocalRun, epoch: int, loss: float, *, checkpoint: bool = True) -> str | None:
    folder = run.checkpoint_dir(epoch) if checkpoint else None
    run.report({"epoch": epoch, "val_loss": loss}, Checkpoint.from_directory(folder) if folder else None)
    return folder


def test_keeps_the_best_by_the_monitored_metric_and_the_latest(tmp_path):
    # given a run that keeps 2 checkpoints by the lowest val_loss
    recorder = Recorder()
    run = LocalRun(str(tmp_path / "run"), [recorder], monitor="val_loss", mode="min", num_to_keep=2)
    # when five epochs report these losses (epoch 4, the latest, is not among the best two)
    for epoch, loss in enumerate([0.9, 0.5, 0.7, 0.4, 0.8]):
        _report(run, epoch, loss)
    # then the best two and the latest are on disk, the rest deleted, and the best is epoch 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint_000001", "checkpoint_000003", "checkpoint_000004"]
    # and the Result a worker group's run returns: last report and checkpoint, the kept ones ranked
    result = run.result(return_value=None)
    assert result.metrics == {"epoch": 4, "val_loss": 0.8}
    assert result.checkpoint.path.endswith("checkpoint_000004")
    assert result.get_best_checkpoint(metric="val_loss", mode="min").path.endswith("checkpoint_000003")
    assert result.path == str(tmp_path / "run")
    # and the callback saw every report, in order, with its checkpoint, as the controller calls it
    assert [c[1][0]["epoch"] for c in recorder.calls] == [0, 1, 2, 3, 4]
    assert all(c[0] is None and c[2].endswith(f"checkpoint_{i:06d}") for i, c in enumerate(recorder.calls))


def test_max_mode_keeps_every_one_without_a_limit_and_never_picks_nan(tmp_path):
    run = LocalRun(str(tmp_path / "run"), [], monitor="val_accuracy", mode="max", num_to_keep=None)
    for epoch, accuracy in enumerate([0.5, 0.8, math.nan, 0.8]):
        folder = run.checkpoint_dir(epoch)
        run.report({"epoch": epoch, "val_accuracy": accuracy}, Checkpoint.from_directory(folder))
    assert len(list((tmp_path / "run").iterdir())) == 4  # num_to_keep None keeps every one
    best = run.result(return_value=None).get_best_checkpoint(metric="val_accuracy", mode="max")
    assert best.path.endswith(("checkpoint_000001", "checkpoint_000003"))  # 0.8 twice, never the NaN


def test_a_report_without_a_checkpoint_still_reaches_the_callbacks(tmp_path):
    recorder = Recorder()
    run = LocalRun(str(tmp_path / "run"), [recorder], monitor="val_loss", mode="min", num_to_keep=1)
    _report(run, 0, math.inf, checkpoint=False)  # rank 0 keeps no checkpoint of NaN weights
    assert run.kept == [] and recorder.calls == [(None, [{"epoch": 0, "val_loss": math.inf}], None)]
    result = run.result(return_value={"diverged": "val_loss is inf", "epoch": 0})
    assert result.checkpoint is None and result.best_checkpoints == [] and result.metrics["epoch"] == 0
    assert result.return_value == {"diverged": "val_loss is inf", "epoch": 0}


def test_an_epoch_trained_again_replaces_its_folder(tmp_path):
    run = LocalRun(str(tmp_path / "run"), [], monitor="val_loss", mode="min", num_to_keep=2)
    folder = _report(run, 0, 0.5)
    (tmp_path / "run" / "checkpoint_000000" / "stale").write_text("from before a resume")
    assert run.checkpoint_dir(0) == folder and not (tmp_path / "run" / "checkpoint_000000" / "stale").exists()
