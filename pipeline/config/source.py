"""`data.source`: where raw data comes from. One model per importer format, told apart by
`format` (a pydantic discriminated union), each holding only its own options."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, model_validator

from pipeline.config.base import MAX_LENGTH_LIMIT, Section


class _Source(Section):
    """What every format has: its name and its files."""

    format: str = Field(
        description="importer: UCR/UEA .ts, the UCR archive's .tsv/.txt (ucr) or Parquet (classify), "
        "csv time series (forecast), CoNLL columns (tag), plain text (lm), tab-separated pairs (seq2seq), "
        "labelled texts in CSV/TSV/JSON Lines (text-classes: classify), MusicXML/MIDI scores (music: lm)"
    )
    paths: list[str] = Field(
        min_length=1,
        description="source files; `builtin://JapaneseVowels/...` names data shipped with recur. "
        "A file whose name ends in _TRAIN/_VAL/_TEST goes to that split.",
    )

    @model_validator(mode="before")
    @classmethod
    def _other_formats_options(cls, data: Any) -> Any:
        """Another format's option is an error naming this format's options, unless it holds that
        option's default: a config dumped with every key (an older recur's) still validates."""
        if not isinstance(data, dict):
            return data
        own = set(cls.model_fields)
        wrong, kept = [], dict(data)
        for key, value in data.items():
            if key in own or key not in OPTION_DEFAULTS:
                continue  # its own, or a key nobody has: pydantic names it as unknown
            if value == OPTION_DEFAULTS[key]:
                kept.pop(key)
            else:
                wrong.append(key)
        if wrong:
            options = ", ".join(k for k in cls.model_fields if k not in ("format", "paths"))
            raise ValueError(f"data.source.{sorted(wrong)[0]} does not apply to format "
                             f"{data.get('format')!r} (its options: {options})")
        return kept

    def importer_options(self) -> dict[str, Any]:
        """The options of this source's format, as keywords for its importer."""
        return {k: getattr(self, k) for k in type(self).model_fields if k not in ("format", "paths")}


_MISSING_HELP = ("missing values (`?` in .ts, NaN inside a ucr row, blank csv cells): error names them; "
                 "zero (ts/ucr), ffill or interpolate fill them, counted in the manifest")
Missing = Literal["error", "zero", "ffill", "interpolate"]


class TsSource(_Source):
    """UCR/UEA `.ts` files (classify)."""

    format: Literal["ts"] = Field(description=_Source.model_fields["format"].description)
    missing: Missing = Field("error", description=_MISSING_HELP)


class UcrSource(_Source):
    """The UCR archive's `.tsv` (2018) or `.txt` (2015) files (classify)."""

    format: Literal["ucr"] = Field(description=_Source.model_fields["format"].description)
    missing: Missing = Field("error", description=_MISSING_HELP)


class ParquetSource(_Source):
    """Parquet files of sequences and labels (classify)."""

    format: Literal["parquet"] = Field(description=_Source.model_fields["format"].description)
    x_column: str = Field("x", description="Parquet sources: the sequence column")
    y_column: str = Field("y", description="Parquet sources: the label column")
    id_column: str | None = Field("id", description="Parquet sources: row id column (None: generated)")
    split_column: str | None = Field(None, description="Parquet sources: column holding train/val/test")


class CsvSource(_Source):
    """A csv time series, cut into history windows and horizons (forecast)."""

    format: Literal["csv"] = Field(description=_Source.model_fields["format"].description)
    time_column: str | None = Field(None, description="csv: column that orders the rows (kept as row ids)")
    value_columns: list[str] = Field(default_factory=list, description="csv: the series' value columns")
    window: int = Field(64, ge=1, le=MAX_LENGTH_LIMIT, description="csv: history steps per example")
    horizon: int = Field(12, ge=1, le=MAX_LENGTH_LIMIT, description="csv: steps to forecast per example")
    stride: int = Field(1, ge=1, le=MAX_LENGTH_LIMIT, description="csv: steps between consecutive windows")
    seasonal_period: int = Field(1, ge=1, le=MAX_LENGTH_LIMIT,
        description="csv: season length of the seasonal-naive baseline")
    gaps: Literal["error", "keep"] = Field(
        "error", description="csv: time steps further apart than the series' usual spacing (missing "
        "rows): error names them; keep windows the series as it is (e.g. business days), counted in "
        "the manifest's task_params.gaps"
    )
    missing: Missing = Field("error", description=_MISSING_HELP)

    @model_validator(mode="after")
    def _check_series(self) -> CsvSource:
        columns = self.value_columns
        if not columns:
            raise ValueError("data.source.value_columns: a csv source needs at least one value column")
        if len(set(columns)) != len(columns):
            raise ValueError(f"data.source.value_columns: {columns} names a column twice")
        if self.time_column in columns:
            raise ValueError(f"data.source.time_column {self.time_column!r} is also one of "
                             "data.source.value_columns")
        if self.missing == "zero":
            raise ValueError("data.source.missing: zero does not apply to format 'csv' (a 0 would read "
                             "as a real value of the series); use ffill or interpolate")
        if self.seasonal_period > self.window:
            raise ValueError(f"data.source.seasonal_period {self.seasonal_period} is longer than "
                             f"data.source.window {self.window}: the seasonal-naive baseline repeats "
                             "the last season of each history")
        return self


class _Vocabulary(_Source):
    """Token formats: how the vocabulary is built from the train split."""

    lowercase: bool = Field(False,
        description="conll/text/tsv/text-classes: lowercase tokens before the vocabulary")
    min_count: int = Field(1, ge=1, description="vocabulary: tokens seen fewer times in train become <unk>")
    max_vocab: int | None = Field(None, ge=5, description="vocabulary: keep at most this many tokens")


_LEVEL_HELP = "text/tsv/text-classes: tokens are characters or words"


class ConllSource(_Vocabulary):
    """CoNLL columns of tokens and tags (tag)."""

    format: Literal["conll"] = Field(description=_Source.model_fields["format"].description)
    token_column: int = Field(0, description="conll: column index of the token")
    tag_column: int = Field(-1, description="conll: column index of the tag (-1: last)")


class TextSource(_Vocabulary):
    """Plain text, one stream of tokens (lm)."""

    format: Literal["text"] = Field(description=_Source.model_fields["format"].description)
    level: Literal["char", "word"] = Field("char", description=_LEVEL_HELP)
    chunk_length: int = Field(1024, ge=2, le=MAX_LENGTH_LIMIT,
        description="text: tokens per stored row of the stream")


class TsvSource(_Vocabulary):
    """Tab-separated source and target texts (seq2seq)."""

    format: Literal["tsv"] = Field(description=_Source.model_fields["format"].description)
    source_column: int = Field(0, description="tsv: column index of the source text")
    target_column: int = Field(1, description="tsv: column index of the target text")
    level: Literal["char", "word"] = Field("char", description=_LEVEL_HELP)


class TextClassesSource(_Vocabulary):
    """CSV, TSV or JSON Lines of labelled texts (classify: sentiment, topic, intent)."""

    format: Literal["text-classes"] = Field(description=_Source.model_fields["format"].description)
    text_column: str = Field("text", description="text-classes: column (or JSON key) of the text")
    label_column: str = Field("label", description="text-classes: column (or JSON key) of the label")
    file_type: Literal["auto", "csv", "tsv", "jsonl"] = Field(
        "auto", description="text-classes: csv, tsv or jsonl; auto: from the extension (.csv, .tsv/.tab, "
        ".jsonl/.ndjson)")
    level: Literal["char", "word", "wordpunct"] = Field(
        "char", description=_LEVEL_HELP + "; text-classes also wordpunct: words with punctuation split "
        "off (runs of \\w and of other non-space characters: 'great!' -> great !)")


class MusicSource(_Source):
    """Scores: MusicXML, MIDI or the music21 corpus (`music21:bach`), one piece per file, as note-event
    tokens (lm); needs the `music` extra (music21)."""

    format: Literal["music"] = Field(description=_Source.model_fields["format"].description)
    parts: list[str] | None = Field(
        None, description="music: the parts to keep, by name, in this order, each after "
        "the one before and a `/` token (e.g. [Soprano, Alto, Tenor, Bass]; comma-separated on the "
        "command line); a score without one of them is invalid. null or []: every part, in score order")
    min_count: int = Field(1, ge=1, description="vocabulary: tokens seen fewer times in train become <unk>")
    max_vocab: int | None = Field(None, ge=5, description="vocabulary: keep at most this many tokens")
    chunk_length: int = Field(1024, ge=2, le=MAX_LENGTH_LIMIT,
        description="music: tokens per stored row of the stream")


SOURCE_MODELS: dict[str, type[_Source]] = {
    "ts": TsSource, "ucr": UcrSource, "parquet": ParquetSource, "csv": CsvSource, "conll": ConllSource,
    "text": TextSource, "tsv": TsvSource, "text-classes": TextClassesSource, "music": MusicSource,
}
SourceConfig = Annotated[TsSource | UcrSource | ParquetSource | CsvSource | ConllSource | TextSource
                         | TsvSource | TextClassesSource | MusicSource, Field(discriminator="format")]
"""`data.source`: one of the format models above, picked by its `format` key."""

# Options that only mean something for some formats, per format, in each model's field order.
FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    fmt: tuple(k for k in model.model_fields if k not in ("format", "paths"))
    for fmt, model in SOURCE_MODELS.items()
}
FORMAT_SPECIFIC = {k for options in FORMAT_OPTIONS.values() for k in options}
# each option's default (the same in every format that has it)
OPTION_DEFAULTS: dict[str, Any] = {
    key: model.model_fields[key].get_default(call_default_factory=True)
    for model in SOURCE_MODELS.values() for key in model.model_fields if key in FORMAT_SPECIFIC
}
_ADAPTER: TypeAdapter = TypeAdapter(SourceConfig)


def source_config(**values: Any) -> _Source:
    """The `data.source` model for `values` (their `format` picks it), validated."""
    return _ADAPTER.validate_python(values)
