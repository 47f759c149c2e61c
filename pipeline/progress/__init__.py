"""What recur shows on stderr while it works, in one of three modes decided once per process.

- ``live``: stderr is a terminal. A status block (an epoch's step progress, the table of trials,
  an import's files and rows) is rewritten in place; lasting lines (an epoch's summary, what a
  long wait is waiting for) are written above it.
- ``plain``: stderr is a file or a pipe (CI, ``ray job logs``). Whole lines only, never a carriage
  return or an ANSI code, and throttled so a log stays readable (see `TrainView`, `TrialTable`).
- ``quiet``: ``recur -q``. Nothing from here; errors, warnings and the final summary still print.

``RECUR_PROGRESS=live|plain|quiet`` overrides the choice. The driver hands its mode to what Ray
runs for it: the runtime env of `pipeline.workflow.session.connect_ray`, the Train callback's and
the Tune trials' arguments.

Nothing here imports Ray: the Ray side (the board rank 0 publishes to, the driver's watcher) is in
`pipeline.training.step_board`, the Tune callback in `pipeline.tuning.study_progress`.
"""

from pipeline.progress.display import ENV, MODES, TAG, Display, detect, duration, mode, number, set_mode, tag
from pipeline.progress.importing import ImportProgress, dropping, importing, source_read
from pipeline.progress.training import TrainView, epoch_line, step_line, wait_message
from pipeline.progress.trials import TRIAL_ENDS, TRIAL_STATUSES, TrialRow, TrialTable

__all__ = ["ENV", "MODES", "TAG", "TRIAL_ENDS", "TRIAL_STATUSES", "Display", "ImportProgress", "TrainView",
           "TrialRow", "TrialTable", "detect", "dropping", "duration", "epoch_line", "importing", "mode",
           "number", "set_mode", "source_read", "step_line", "tag", "wait_message"]
