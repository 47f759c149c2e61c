"""Typed recur configuration: YAML files merged left to right, `--set` overrides, strict validation.

This package is the one place where config text becomes a `RecurConfig`: `base` (the error, the
strict section base, size limits, formats), `source` (`data.source`), `sections`, `recur`
(`RecurConfig` and its cross-section checks), `loading` (YAML, `--set`, errors) and `paths`.
Every section is a frozen pydantic model with `extra="forbid"`, so an unknown or mistyped key is
an error that names the key and the file it came from. Config becomes a plain dict only at the Ray boundary
(`RecurConfig.model_dump()`), and back again with `RecurConfig.model_validate`.
"""

from pipeline.config.base import (
    DEFAULT_MAX_LENGTH,
    FORMAT_TASKS,
    MAX_BATCH,
    MAX_LENGTH_FORMATS,
    MAX_LENGTH_LIMIT,
    MAX_WIDTH,
    ConfigError,
    Section,
)
from pipeline.config.loading import (
    MAX_YAML_VALUES,
    dump_yaml,
    flatten,
    json_schema,
    load_config,
    parse_override,
    validate_config,
)
from pipeline.config.paths import (
    BUILTIN_SCHEME,
    MUSIC21_SCHEME,
    absolute_store_uri,
    relative_paths,
    with_absolute_paths,
)
from pipeline.config.recur import (
    RecurConfig,
)
from pipeline.config.sections import (
    DataConfig,
    GenerateConfig,
    LrScheduleConfig,
    ModelConfig,
    RegistryConfig,
    ResourcesConfig,
    TrackingConfig,
    TrainConfig,
    TrialSchedulerConfig,
    TuneConfig,
)
from pipeline.config.source import (
    FORMAT_OPTIONS,
    FORMAT_SPECIFIC,
    OPTION_DEFAULTS,
    SOURCE_MODELS,
    ConllSource,
    CsvSource,
    MusicSource,
    ParquetSource,
    SourceConfig,
    TextSource,
    TsSource,
    TsvSource,
    UcrSource,
    source_config,
)

__all__ = [
    "BUILTIN_SCHEME",
    "ConfigError",
    "ConllSource",
    "CsvSource",
    "DEFAULT_MAX_LENGTH",
    "DataConfig",
    "FORMAT_OPTIONS",
    "FORMAT_SPECIFIC",
    "FORMAT_TASKS",
    "GenerateConfig",
    "MAX_BATCH",
    "MAX_LENGTH_FORMATS",
    "MAX_LENGTH_LIMIT",
    "MAX_WIDTH",
    "MAX_YAML_VALUES",
    "MUSIC21_SCHEME",
    "ModelConfig",
    "MusicSource",
    "OPTION_DEFAULTS",
    "ParquetSource",
    "RecurConfig",
    "RegistryConfig",
    "ResourcesConfig",
    "SOURCE_MODELS",
    "LrScheduleConfig",
    "TrialSchedulerConfig",
    "Section",
    "SourceConfig",
    "TextSource",
    "TrackingConfig",
    "TrainConfig",
    "TsSource",
    "TsvSource",
    "TuneConfig",
    "UcrSource",
    "absolute_store_uri",
    "dump_yaml",
    "flatten",
    "json_schema",
    "load_config",
    "parse_override",
    "relative_paths",
    "source_config",
    "validate_config",
    "with_absolute_paths",
]
