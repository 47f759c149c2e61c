"""The driver's view of a study while Tune runs it: the table of trials (`StudyProgress`, a Tune
callback), what happened to each trial in recur's words (`trial_status`), kept on disk for a
resumed study (`read_outcomes`), and Ctrl-C that ends a study the way Tune would
(`study_interrupt`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from pipeline.environ import temporary_environ
from pipeline.progress import TAG, Display, TrialRow, TrialTable

OUTCOMES_FILE = "trial_outcomes.json"
# Set by `study_interrupt`'s Ctrl-C handler (a signal is the whole process's): the study's end
# is then an interruption, not its time budget.
INTERRUPTED = threading.Event()


def finished(result: dict[str, Any], total_epochs: int) -> bool:
    """The trial's last report says it trained every epoch it planned (`epochs_planned`, from
    train.epochs and train.min_steps) or stopped early by itself (train.early_stopping_patience)."""
    planned = int(result.get("epochs_planned") or total_epochs)
    return bool(result.get("early_stopped")) or int(result.get("epoch", -1)) + 1 >= planned


def trial_status(tune_status: str, result: dict[str, Any], *, total_epochs: int, started: bool,
                 returned: bool, stopped: bool, ended: str | None) -> str:
    """A trial's status in recur's words (pipeline.progress.TRIAL_STATUSES) from Tune's own state
    (PENDING, RUNNING, PAUSED, TERMINATED, ERROR) and what `StudyProgress` saw happen to it:
    `returned` (its function ended by itself), `stopped` (its scheduler stopped or removed it).
    `ended`: once the study is over, how it ended ("stopped by time budget" or "interrupted")
    for the trials it cut short; None while it runs."""
    if tune_status == "ERROR" or result.get("diverged"):
        return "failed"
    if tune_status in ("PENDING", "RUNNING", "PAUSED"):
        if ended is None:
            return tune_status.lower()
        return ended if started or result else "never started"
    if returned or (result and finished(result, total_epochs)):
        return "completed"
    if stopped:
        return "stopped by scheduler"
    if not started and not result:
        return "never started"
    return ended or "interrupted"


class StudyProgress(Callback):
    """The driver's table of trials (`pipeline.progress.TrialTable`), from Tune's own trial states:
    status, sampled values, epochs done, the last and best value of the study's metric.

    It also keeps what Tune's states leave out, in `<study>/trial_outcomes.json` (so a resumed
    study knows it too): which trials started, which ended by themselves and which their
    scheduler stopped; at the end, every trial's status (`trial_status`).
    """

    def __init__(self, *, metric: str, mode: str, total_epochs: int, display_mode: str | None = None,
                 refresh_s: float = 0.5, record_dir: str | None = None,
                 time_budget_s: float | None = None) -> None:
        self.metric, self.mode, self.total_epochs = metric, mode, total_epochs
        self.display_mode, self.refresh_s = display_mode, refresh_s
        self.record_dir, self.time_budget_s = record_dir, time_budget_s
        self._table: TrialTable | None = None
        self._last = 0.0
        self._seen: dict[str, set[str]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune keeps its run config (callbacks included) with the study; a resumed study shows
        # its table in the mode of the process that resumes it, and reads what was seen from disk
        return {**self.__dict__, "_table": None, "_last": 0.0, "_seen": None}

    @property
    def table(self) -> TrialTable:
        if self._table is None:
            self._table = TrialTable(Display(self.display_mode), metric=self.metric, mode=self.mode)
        return self._table

    @property
    def seen(self) -> dict[str, set[str]]:
        """{"started" | "returned" | "stopped": trial ids}, as recorded so far."""
        if self._seen is None:
            self._seen = {k: set() for k in ("started", "returned", "stopped")}
            path = self._path()
            if path is not None and path.exists():
                for key, ids in json.loads(path.read_text()).get("seen", {}).items():
                    self._seen.setdefault(key, set()).update(ids)
        return self._seen

    def _path(self) -> Path | None:
        return Path(self.record_dir) / OUTCOMES_FILE if self.record_dir else None

    def _save(self, trials: dict[str, dict[str, str]] | None = None) -> None:
        path = self._path()
        if path is None:
            return
        record: dict[str, Any] = {"seen": {k: sorted(v) for k, v in self.seen.items()}}
        if trials is not None:
            record["trials"] = trials
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)  # a study killed mid-write keeps the previous record

    def _mark(self, key: str, trial: Any) -> None:
        if trial.trial_id not in self.seen[key]:
            self.seen[key].add(trial.trial_id)
            self._save()

    def status(self, trial: Any, ended: str | None = None) -> str:
        seen, tid = self.seen, trial.trial_id
        return trial_status(trial.status, trial.last_result or {}, total_epochs=self.total_epochs,
                            started=tid in seen["started"], returned=tid in seen["returned"],
                            stopped=tid in seen["stopped"], ended=ended)

    def row(self, trial: Any, ended: str | None = None) -> TrialRow:
        result = trial.last_result or {}
        analysis = (getattr(trial, "metric_analysis", None) or {}).get(self.metric, {})
        return TrialRow(trial_id=trial.trial_id, status=self.status(trial, ended),
                        params=dict(trial.config or {}),
                        epochs=int(result.get("training_iteration", 0) or 0),
                        last=result.get(self.metric), best=analysis.get(self.mode))

    def _update(self, trials: list[Any], started: Any = None, ended: str | None = None) -> None:
        self._last = time.monotonic()
        rows = [self.row(t, ended) for t in trials]
        for row in rows:  # Tune calls on_trial_start before it marks the trial RUNNING
            if started is not None and row.trial_id == started.trial_id:
                row.status = "running"
        self.table.update(rows)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._mark("started", trial)
        self._update(trials, started=trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # Tune marks the result `done` when its scheduler (or a stopper) decided to stop the trial;
        # the trial's own reports never say done
        if result.get("done") and not finished(result, self.total_epochs):
            self._mark("stopped", trial)
        self._update(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Tune calls this (before it changes the status) when the trial's function returned, and
        # when its scheduler stops a running trial (seen above) or removes a pending or paused one
        if trial.status in ("PENDING", "PAUSED"):
            self._mark("stopped", trial)
        elif trial.trial_id not in self.seen["stopped"]:
            self._mark("returned", trial)
        self._update(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trials)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self._last >= self.refresh_s:  # new pending trials, paused ones
            self._update(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # Trials still live now were cut short: by Ctrl-C, else by the time budget (Tune has
        # already marked them TERMINATED without telling any callback)
        ended = "interrupted" if INTERRUPTED.is_set() or not self.time_budget_s else "stopped by time budget"
        self._update(trials, ended=ended)
        self._save({t.trial_id: {"status": self.status(t, ended), "dir": Path(t.path).name}
                    for t in trials})
        self.table.close()


def read_outcomes(study_dir: str | Path) -> dict[str, dict[str, str]]:
    """Every trial of the study as its last run ended (`StudyProgress`), in the order Tune made
    them: trial id -> {"status": recur's status, "dir": the trial's folder name}."""
    path = Path(study_dir) / OUTCOMES_FILE
    return json.loads(path.read_text()).get("trials", {}) if path.exists() else {}


@contextlib.contextmanager
def study_interrupt() -> Any:
    """Ctrl-C during `Tuner.fit()` ends the study the way Tune ends one on its own signal: the
    running trials are stopped after a last snapshot of the study, so `recur tune --resume`
    continues it; a second Ctrl-C stops at once. The study's caller then sees `INTERRUPTED`
    set. Tune's own SIGINT handler would do the same but leave no trace that it did."""
    INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield INTERRUPTED
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: Any) -> None:
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Tune's graceful stop, installed by fit()
        if INTERRUPTED.is_set() or not callable(tune_stop):
            raise KeyboardInterrupt
        INTERRUPTED.set()
        Display().line(f"{TAG} stopping the study after a last snapshot (Ctrl-C again stops at once)")
        tune_stop(signal.SIGUSR1, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        # ours instead of Tune's own, which would leave no trace that it happened
        with temporary_environ({"TUNE_DISABLE_SIGINT_HANDLER": "1"}):
            yield INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
