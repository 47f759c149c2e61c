"""What every config section shares: the error type, the strict frozen model base, the size
limits of keys, and which task each `data.source.format` imports."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pipeline.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override is invalid; the message names the key and where it came from."""


class Section(BaseModel):
    # NaN and inf are refused in every float key: `train.lr: .inf` would train on NaN weights
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Upper bounds of size keys: far above anything that trains, low enough that a typo (an extra
# zero or three) is refused with the key instead of allocating tens of GB.
MAX_WIDTH = 16_384  # hidden, embedding and channel widths
MAX_LENGTH_LIMIT = 10_000_000  # time steps or tokens of one sequence, window or chunk
MAX_BATCH = 65_536  # sequences per batch per worker
# data.max_length when none is set (ts, ucr, parquet: classify): a longer row is refused, naming
# it and the key. One 200,000-step row took about 10 GB to train; 20,000 steps fit in about 1 GB.
DEFAULT_MAX_LENGTH = 20_000
# Formats whose importer applies `data.max_length` (a classify dataset's sequences: time steps, or
# tokens of a text).
MAX_LENGTH_FORMATS: tuple[str, ...] = ("ts", "ucr", "parquet", "text-classes")
FORMAT_TASKS: dict[str, tuple[str, ...]] = {
    "ts": ("classify",), "ucr": ("classify",), "parquet": ("classify",), "csv": ("forecast",),
    "conll": ("tag",),
    "text": ("lm",), "tsv": ("seq2seq",), "text-classes": ("classify",), "music": ("lm",),
}
