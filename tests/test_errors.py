"""How an exception ends a `recur` command (`pipeline.errors`): the rule other modules rely on."""

from __future__ import annotations

import pytest

from pipeline import errors
from pipeline.config import ConfigError
from pipeline.errors import CommandError
from pipeline.training.trainer import TrainingFailed


@pytest.mark.parametrize("exc,code,line", [
    (ConfigError("train.lr: bad"), 2, "recur: error: train.lr: bad"),
    (CommandError("no such model"), 2, "recur: error: no such model"),
    (FileNotFoundError(2, "No such file or directory", "c.yaml"), 2,
     "recur: error: c.yaml: No such file or directory"),
    (TrainingFailed("workers died"), 1, "recur: workers died"),
    (KeyboardInterrupt(), 130, "recur: interrupted"),
])
def test_user_errors_failures_and_interrupts_are_one_line(exc, code, line):
    assert errors.exit_code(exc) == code and errors.one_line(exc) == line


def test_a_bug_keeps_its_traceback():
    assert errors.exit_code(ValueError("a bug")) is None and errors.exit_code(SystemExit(3)) is None


def test_the_same_kinds_from_the_code_bundled_with_a_model_count_too():
    # given a UserError subclass from a copy of pipeline.errors under another package name
    bundled = type("UserError", (Exception,), {"__module__": "recur_model_0123abcd.errors"})
    data_error = type("DatasetError", (bundled,), {"__module__": "recur_model_0123abcd.data.dataset.schema"})
    assert errors.exit_code(data_error("row 3: NaN")) == 2


def test_debug_is_the_flag_or_the_variable(monkeypatch):
    monkeypatch.delenv(errors.DEBUG_ENV, raising=False)
    assert errors.debug_enabled(True) and not errors.debug_enabled(False)
    for value, on in (("1", True), ("yes", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv(errors.DEBUG_ENV, value)
        assert errors.debug_enabled() is on
