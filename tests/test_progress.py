"""Progress output without Ray: modes, the live/plain/quiet renderers, throttling, the table of
trials, import progress, the board's bookkeeping and rank 0's publisher."""

from __future__ import annotations

import io
import logging
from types import SimpleNamespace

import pytest

from pipeline import progress
from pipeline.progress import Display, ImportProgress, TrainView, TrialRow, TrialTable


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def _step(epoch=0, step=1, steps=100, loss=0.5, pid=7, seconds=2.0):
    return {"epoch": epoch, "step": step, "steps": steps, "loss": loss, "sequences_per_second": 1234.0,
            "seconds": seconds, "pid": pid}


def _report(epoch=0, pid=7):
    return {"epoch": epoch, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9, "grad_norm": 1.25,
            "sequences_per_second": 2000.0, "pid": pid}


def _controls(text: str) -> bool:
    return "\r" in text or "\x1b" in text


# ------------------------------------------------------------------------------------ modes


def test_mode_follows_the_terminal_and_the_override(monkeypatch):
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert progress.detect(Tty()) == "live"
    assert progress.detect(io.StringIO()) == "plain"  # CI, `ray job logs`
    monkeypatch.setenv("TERM", "dumb")
    assert progress.detect(Tty()) == "plain"
    monkeypatch.setenv(progress.ENV, "quiet")
    assert progress.detect(Tty()) == "quiet"
    monkeypatch.setenv(progress.ENV, "nonsense")  # ignored, not fatal
    assert progress.detect(io.StringIO()) == "plain"
    with pytest.raises(ValueError, match="live, plain, quiet"):
        progress.set_mode("loud")


def test_cli_quiet_flag_sets_quiet_mode_and_is_exclusive_with_verbose(monkeypatch):
    from pipeline.cli import build_parser, main

    monkeypatch.delenv(progress.ENV, raising=False)
    assert build_parser().parse_args(["-q", "config", "schema"]).quiet
    with pytest.raises(SystemExit):
        build_parser().parse_args(["-q", "-v", "config", "schema"])
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(logging.INFO)
        assert main(["-q", "config", "schema"]) == 0
        assert progress.mode() == "quiet"
        assert root.level == logging.INFO  # quiet only while the command ran
        assert main(["config", "schema"]) == 0
        assert progress.mode() == "plain"  # pytest's stderr is not a terminal
    finally:
        root.setLevel(before)
        progress.set_mode(None)


# ---------------------------------------------------------------------------------- display


def test_plain_display_writes_lines_only_and_ignores_the_status():
    out = io.StringIO()
    display = Display("plain", out)
    display.status("a status nobody sees")
    display.line("one\rline \x1b[1m")
    assert out.getvalue() == "one line [1m\n" and not _controls(out.getvalue())


def test_quiet_display_writes_nothing():
    out = io.StringIO()
    display = Display("quiet", out)
    display.line("x")
    display.status(["y", "z"])
    display.keep()
    assert out.getvalue() == ""


def test_live_display_rewrites_its_block_in_place_under_lasting_lines():
    out = Tty()
    display = Display("live", out)
    display.status(["a", "b"])
    display.line("lasting")
    display.status("c")
    text = out.getvalue()
    assert text.startswith("a\nb")
    # the block is erased (two lines up) before the lasting line, then drawn again
    assert "\r\x1b[2K\x1b[1A\x1b[2Klasting\na\nb" in text
    assert text.endswith("\r\x1b[2K\x1b[1A\x1b[2Kc")
    display.clear()
    assert out.getvalue().endswith("c\r\x1b[2K")


# --------------------------------------------------------------------------------- training


def test_plain_training_view_throttles_step_lines():
    out, clock = io.StringIO(), Clock()
    view = TrainView(Display("plain", out), 20, clock=clock)
    view.apply({"first": _step(step=1), "epochs": [], "step": None})  # the run's first step: a line
    for step in (10, 20):  # within the first quarter, within 30 s: nothing
        clock.t += 1
        view.apply({"first": None, "epochs": [], "step": _step(step=step)})
    clock.t += 12
    view.apply({"first": None, "epochs": [], "step": _step(step=26)})  # crossed 25%, 14 s later
    clock.t += 2
    view.apply({"first": None, "epochs": [], "step": _step(step=51)})  # crossed 50%, too soon after
    clock.t += 30
    view.apply({"first": None, "epochs": [], "step": _step(step=60)})  # 30 s since the last line
    view.apply({"first": None, "epochs": [_report(0)], "step": None})
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[1] for line in lines[:3]] == ["step 1/100 (1%)", "step 26/100 (26%)",
                                                           "step 60/100 (60%)"]
    assert lines[0] == "[recur] epoch 1/20  step 1/100 (1%)  loss 0.5000  1234 seq/s  eta 3m18s"
    assert lines[3] == ("[recur] epoch 1/20  train_loss 0.5000  val_loss 0.4000  val_accuracy 0.9000  "
                        "grad_norm 1.25  2000 seq/s")
    assert len(lines) == 4 and not _controls(out.getvalue())


def test_short_epochs_print_their_epoch_lines_alone_in_plain_mode():
    out, clock = io.StringIO(), Clock()
    view = TrainView(Display("plain", out), 3, clock=clock)
    view.apply({"first": _step(step=1, steps=4), "epochs": [], "step": None})
    for epoch in range(3):
        for step in (2, 3, 4):
            clock.t += 0.3
            view.apply({"first": None, "epochs": [], "step": _step(epoch, step, steps=4)})
        view.apply({"first": None, "epochs": [_report(epoch)], "step": None})
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "step 1/4" in lines[0]
    assert [line.split("  ")[0] for line in lines[1:]] == [f"[recur] epoch {e}/3" for e in (1, 2, 3)]


def test_live_training_view_shows_steps_as_status_and_epochs_as_lines():
    out = Tty()
    view = TrainView(Display("live", out), 5)
    view.idle("starting 2 Train worker(s)")
    view.apply({"first": _step(step=3), "epochs": [], "step": None})
    view.apply({"first": None, "epochs": [_report(0)], "step": _step(1, 2)})
    view.close()
    text = out.getvalue()
    assert "[recur] starting 2 Train worker(s)... 0s" in text
    assert "\r\x1b[2K[recur] epoch 1/5  train_loss 0.5000" in text
    assert text.count("step 3/100") == 1 and "epoch 2/5  step 2/100 (2%)" in text
    assert text.endswith("\r\x1b[2K")  # the status is gone when training ends


def test_quiet_training_view_prints_nothing_but_warns_about_missing_resources(caplog):
    out = io.StringIO()
    view = TrainView(Display("quiet", out), 5)
    view.apply({"first": _step(), "epochs": [_report(0)], "step": _step(1)})
    view.waiting("waiting for the first report", pending=False)
    with caplog.at_level(logging.WARNING):
        view.waiting("waiting for resources: ...", pending=True)
    assert out.getvalue() == ""
    assert [r.getMessage() for r in caplog.records] == ["waiting for resources: ..."]


def test_wait_message_names_the_request_and_what_is_free():
    pending = progress.wait_message(num_workers=2, per_worker={"CPU": 1.0, "GPU": 1.0},
                                    available={"CPU": 0.5}, total={"CPU": 2.0, "GPU": 0.0}, pending=True,
                                    start_timeout_s=600)
    assert pending == ("waiting for resources: 2 Train worker(s) x 1 CPU + 1 GPU requested, the cluster "
                       "has 0.5 of 2 CPU, 0 of 0 GPU free; an autoscaling cluster may be adding nodes "
                       "(training gives up after resources.start_timeout_s = 600 s)")
    placed = progress.wait_message(num_workers=2, per_worker={"CPU": 0.5}, available={"CPU": 1.0},
                                   total={"CPU": 2.0}, pending=False, start_timeout_s=600)
    assert placed.startswith("waiting for the first report of 2 Train worker(s) (0.5 CPU each, placed;")


# ------------------------------------------------------------------------------------ board


def test_board_keeps_the_first_step_drops_stale_steps_and_shows_restarted_epochs():
    from pipeline.training.step_board import StepBoard

    board = StepBoard()
    board.step(_step(0, 1))
    board.step(_step(0, 5))
    assert board.take() == {"first": _step(0, 1), "epochs": [], "step": _step(0, 5)}
    board.step(_step(0, 9))
    board.epoch(_report(0))  # the epoch's report replaces its last step
    board.step(_step(0, 10))  # sent before the report, arrived after: dropped
    assert board.take() == {"first": None, "epochs": [_report(0)], "step": None}
    board.step(_step(0, 2, pid=8))  # a restarted worker group trains epoch 0 again
    assert board.take()["step"] == _step(0, 2, pid=8)
    assert board.take() == {"first": None, "epochs": [], "step": None}


def test_publisher_sends_at_most_once_per_interval_and_survives_a_lost_board():
    from pipeline.training.step_board import StepPublisher

    sent = []
    board = SimpleNamespace(step=SimpleNamespace(remote=sent.append))
    clock = Clock()
    publisher = StepPublisher(board, world_size=2, interval_s=1.0, clock=clock)
    publisher.start_epoch(3, 40)
    assert publisher.due()
    publisher.publish(step=1, loss=0.7, sequences=16, seconds=0.5)
    clock.t += 0.5
    assert not publisher.due()
    clock.t += 0.5
    assert publisher.due()
    assert sent == [{"epoch": 3, "step": 1, "steps": 40, "loss": 0.7, "sequences_per_second": 64.0,
                     "seconds": 0.5, "pid": publisher.pid}]

    def gone(update):
        raise RuntimeError("actor died")

    publisher.board = SimpleNamespace(step=SimpleNamespace(remote=gone))
    publisher.publish(step=2, loss=0.6, sequences=32, seconds=1.0)  # no exception: training goes on
    assert publisher.board is None and not publisher.due()


# ----------------------------------------------------------------------------------- tuning


def _rows(**status):
    return [TrialRow("t_00000", status.get("a", "running"), {"train.lr": 0.003162, "model.cell": "gru"},
                     epochs=2, last=0.41, best=0.39),
            TrialRow("t_00001", status.get("b", "pending"), {"train.lr": 1.2e-05, "model.cell": "lstm"})]


def test_live_trial_table_is_redrawn_in_place_and_kept_at_the_end():
    out, clock = Tty(), Clock()
    table = TrialTable(Display("live", out), metric="val_loss", mode="min", clock=clock)
    table.update(_rows())
    assert table.render() == [
        "trial    status   model.cell  train.lr  epochs  last val_loss  best val_loss",
        "t_00000  running  gru         0.003162  2       0.41           0.39",
        "t_00001  pending  lstm        1.2e-05   0",
        "[recur] trials: pending 1, running 1; best t_00000 val_loss 0.39",
    ]
    table.update(_rows())  # nothing changed, 0 s later: not redrawn
    assert out.getvalue().count("t_00001") == 1
    table.update(_rows(a="completed", b="running"))  # a status change: redrawn at once
    assert out.getvalue().count("t_00001") == 2 and "\x1b[1A" in out.getvalue()
    table.close()  # drawn once more, then left on screen
    assert out.getvalue().endswith("[recur] trials: running 1, completed 1; best t_00000 val_loss 0.39\n")


def test_plain_trial_table_prints_status_changes_and_a_periodic_summary():
    out, clock = io.StringIO(), Clock()
    table = TrialTable(Display("plain", out), metric="val_loss", mode="min", clock=clock)
    table.update(_rows())
    clock.t += 5
    table.update(_rows())  # results, no change, 5 s: nothing
    clock.t += 30
    table.update(_rows())  # 35 s since the last line: the summary
    table.update(_rows(a="stopped by scheduler"))
    table.update([TrialRow("t_00001", "failed", {}, epochs=1, last=float("nan"), best=None)])
    table.close()
    assert out.getvalue().splitlines() == [
        "[recur] trial t_00000 running  model.cell=gru  train.lr=0.003162",
        "[recur] trial t_00001 pending  model.cell=lstm  train.lr=1.2e-05",
        "[recur] trials: pending 1, running 1; best t_00000 val_loss 0.39",
        "[recur] trial t_00000 stopped by scheduler after 2 epoch(s): val_loss last 0.41 best 0.39",
        "[recur] trial t_00001 failed after 1 epoch(s): val_loss last nan best None",
        "[recur] trials: stopped by scheduler 1, failed 1; best t_00000 val_loss 0.39",
    ]
    assert not _controls(out.getvalue())


def test_quiet_trial_table_prints_nothing():
    out = io.StringIO()
    table = TrialTable(Display("quiet", out), metric="val_loss", mode="min")
    table.update(_rows())
    table.close()
    assert out.getvalue() == ""


def test_study_progress_says_what_tune_did_to_each_trial_and_survives_pickling(tmp_path):
    """Given Tune's trials as its callbacks see them, the statuses are what happened: completed (all
    planned epochs, early stopping, or the function returned), stopped by the scheduler (a result
    Tune marked done), cut short by the study's end, never started; and they are kept on disk."""
    import pickle

    from pipeline.tuning.study_progress import StudyProgress, read_outcomes

    out = io.StringIO()
    callback = StudyProgress(metric="val_accuracy", mode="max", total_epochs=4, record_dir=str(tmp_path),
                             time_budget_s=60.0)
    callback._table = TrialTable(Display("plain", out), metric="val_accuracy", mode="max")

    def trial(trial_id, status, result, best=None):
        return SimpleNamespace(trial_id=trial_id, status=status, config={"train.lr": 0.01},
                               last_result=result, path=str(tmp_path / f"trial_{trial_id}"),
                               metric_analysis={"val_accuracy": {"max": best}} if best else {})

    # 6 epochs planned (train.min_steps raised train.epochs 4): the 4th is not the end
    done = trial("a", "RUNNING", {"epoch": 5, "epochs_planned": 6, "training_iteration": 6,
                                  "val_accuracy": 0.8}, 0.9)
    stopped = trial("b", "RUNNING", {"epoch": 3, "epochs_planned": 6, "training_iteration": 4,
                                     "val_accuracy": 0.5}, 0.5)
    early = trial("c", "TERMINATED", {"epoch": 1, "training_iteration": 2, "early_stopped": 1,
                                      "val_accuracy": 0.7}, 0.7)
    cut = trial("d", "RUNNING", {"epoch": 0, "epochs_planned": 6, "training_iteration": 1,
                                 "val_accuracy": 0.6}, 0.6)
    waiting = trial("e", "PENDING", {})
    trials = [done, stopped, early, cut, waiting]
    assert callback.row(waiting) == TrialRow("e", "pending", {"train.lr": 0.01})
    for t in (done, stopped, cut):
        callback.on_trial_start(0, trials, t)
    callback.on_trial_result(1, trials, stopped, {**stopped.last_result, "done": True})  # ASHA: stop
    callback.on_trial_result(1, trials, done, {**done.last_result, "done": True})  # max_t on its last
    for t in (done, stopped):
        callback.on_trial_complete(2, trials, t)
        t.status = "TERMINATED"
    for t in (cut, waiting):  # the time budget: Tune stops the rest, telling no callback
        t.status = "TERMINATED"
    again = pickle.loads(pickle.dumps(callback))  # Tune keeps its callbacks with the study
    assert again._table is None and again._seen is None and again.metric == "val_accuracy"
    callback.on_experiment_end(trials)
    expected = ["completed", "stopped by scheduler", "completed", "stopped by time budget", "never started"]
    assert [o["status"] for o in read_outcomes(tmp_path).values()] == expected
    assert out.getvalue().splitlines()[-1] == ("[recur] trials: completed 2, stopped by scheduler 1, stopped "
                                               "by time budget 1, never started 1; best a val_accuracy 0.9")
    assert [again.status(t) for t in trials[:3]] == expected[:3]  # what was seen, read back from disk


# ----------------------------------------------------------------------------------- import


def test_import_progress_per_file_and_throttled_for_many_files():
    out, clock = io.StringIO(), Clock()
    imported = ImportProgress(Display("plain", out), plain_files=3, clock=clock)
    for index in range(1, 6):
        clock.t += 10
        imported.file(f"/data/part-{index}.csv", 100, index=index, files=5)
    assert out.getvalue().splitlines() == [
        "[recur] import: file 1/5 part-1.csv: 100 rows (100 rows read so far)",
        "[recur] import: file 4/5 part-4.csv: 100 rows (400 rows read so far)",
        "[recur] import: file 5/5 part-5.csv: 100 rows (500 rows read so far)",
    ]
    live = Tty()
    imported = ImportProgress(Display("live", live))
    imported.file("a.ts", 7, index=1, files=1)
    imported.close()
    assert live.getvalue() == "[recur] import: file 1/1 a.ts: 7 rows (7 rows read so far)\n"


def test_importers_report_files_and_rows_only_inside_an_import(tmp_path):
    from pipeline.data.importers import import_dataset

    for split, n in (("TRAIN", 6), ("TEST", 4)):
        cases = "".join(f"{i}.0,{i + 1}.0,{i + 2}.0:{'ab'[i % 2]}\n" for i in range(n))
        (tmp_path / f"toy_{split}.ts").write_text(
            "@problemName toy\n@univariate true\n@classLabel true a b\n@data\n" + cases)
    out = io.StringIO()
    with progress.importing(Display("plain", out)):
        import_dataset("ts", [str(tmp_path / "toy_TRAIN.ts"), str(tmp_path / "toy_TEST.ts")],
                       str(tmp_path / "ds"), val_fraction=0.34)
    assert out.getvalue().splitlines() == [
        "[recur] import: file 1/2 toy_TRAIN.ts: 6 rows (6 rows read so far)",
        "[recur] import: file 2/2 toy_TEST.ts: 4 rows (10 rows read so far)",
    ]
    progress.source_read("x", 1, index=1, files=1)  # outside an import: nothing, no error


def test_dropping_filters_library_chatter_in_quiet_mode_only(capsys):
    import sys

    try:
        progress.set_mode("quiet")
        with progress.dropping("Successfully registered"):
            print("Successfully registered model 'm'.", file=sys.stderr)
            print("WARNING something real", file=sys.stderr)
        progress.set_mode("plain")
        with progress.dropping("Successfully registered"):
            print("Successfully registered model 'm'.", file=sys.stderr)
    finally:
        progress.set_mode(None)
    assert capsys.readouterr().err == "WARNING something real\nSuccessfully registered model 'm'.\n"
