"""Config: merging, overrides, strict validation with errors that name the key and the file."""

import json
from pathlib import Path

import pytest

from pipeline.config import ConfigError, RecurConfig, flatten, json_schema, load_config

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = Path(__file__).parent / "config_examples"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("**/*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config([path])
    assert isinstance(cfg, RecurConfig)


@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.yaml")), ids=lambda p: p.name)
def test_valid_examples(path):
    import yaml

    def dotted(node, prefix=""):
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in dotted(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    cfg = flatten(load_config([path]))
    written = dotted(yaml.safe_load(path.read_text()) or {})
    defaults = flatten(RecurConfig())
    # every value the example writes is what the config holds; every other key keeps its default
    assert {key: cfg[key] for key in written} == written
    assert {k: v for k, v in cfg.items() if k not in written} == {
        k: v for k, v in defaults.items() if k not in written}


@pytest.mark.parametrize("path,key", [
    ("unknown_key.yaml", "model.hiden_size"),
    ("wrong_type.yaml", "train.epochs"),
    ("unknown_cell.yaml", "model.cell"),
])
def test_invalid_examples_name_key_and_file(path, key):
    with pytest.raises(ConfigError) as err:
        load_config([EXAMPLES / "invalid" / path])
    message = str(err.value)
    assert key in message
    assert path in message


def test_unknown_key_lists_known_keys():
    with pytest.raises(ConfigError, match="known keys in model: .*hidden_size"):
        load_config([EXAMPLES / "invalid" / "unknown_key.yaml"])


def test_files_merge_left_to_right_and_set_wins(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("train: {lr: 0.1, epochs: 3}\nmodel: {cell: gru}\n")
    top = tmp_path / "top.yaml"
    top.write_text("train: {lr: 0.2}\n")
    cfg = load_config([base, top], ["train.lr=0.003", "model.bidirectional=true"])
    assert cfg.train.lr == 0.003
    assert cfg.train.epochs == 3  # kept from the base: sections merge, not replace
    assert cfg.model.cell == "gru" and cfg.model.bidirectional is True


def test_bad_override_names_the_override():
    with pytest.raises(ConfigError, match=r"train.lrr.*--set train.lrr=1"):
        load_config([], ["train.lrr=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config([], ["train.lr"])


def test_monitor_mode_must_match_metric():
    with pytest.raises(ConfigError, match="train.monitor_mode"):
        load_config([], ["train.monitor=val_loss", "train.monitor_mode=max"])


def test_config_is_frozen_and_round_trips_through_a_dict():
    cfg = load_config([REPO / "configs" / "quickstart.yaml"])
    with pytest.raises(Exception):
        cfg.train.lr = 1.0
    assert RecurConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config([bad])


def test_schema_and_flatten():
    schema = json.loads(json_schema())
    assert set(schema["properties"]) == {"data", "model", "train", "tracking", "generate", "tune", "registry",
                                           "resources"}
    flat = flatten(RecurConfig())
    assert flat["train.lr"] == RecurConfig().train.lr
    assert "model.cell" in flat


def test_monitor_any_logged_metric_but_only_those():
    cfg = load_config([], ["train.monitor=train_loss", "train.monitor_mode=min"])
    assert cfg.train.monitor == "train_loss"
    load_config([], ["train.monitor=val_macro_f1", "train.monitor_mode=max"])
    with pytest.raises(ConfigError, match="train.monitor must be a metric that classify runs log"):
        load_config([], ["train.monitor=val_bleu"])


def test_schedule_section_is_strict():
    cfg = load_config([], ["train.schedule.name=cosine", "train.schedule.warmup_epochs=3"])
    assert cfg.train.schedule.name == "cosine" and cfg.train.schedule.warmup_epochs == 3
    with pytest.raises(ConfigError, match="train.schedule.name"):
        load_config([], ["train.schedule.name=linear"])


def test_source_options_must_fit_the_format():
    ts = ["data.source.format=ts", "data.source.paths=[a.ts]"]
    with pytest.raises(ConfigError,
                       match=r"data.source.window does not apply to format 'ts' \(its options: missing\)"):
        load_config([], [*ts, "data.source.window=10"])
    with pytest.raises(ConfigError, match="data.source.value_columns: a csv source needs"):
        load_config([], ["data.task=forecast", "data.source.format=csv", "data.source.paths=[a.csv]"])


def test_each_format_is_its_own_model_and_an_older_full_dump_still_loads():
    # `data.source` is one model per format (a union on `format`): a ts source has no csv keys
    ts = ["data.source.format=ts", "data.source.paths=[a.ts]"]
    source = load_config([], ts).data.source
    assert type(source).__name__ == "TsSource" and not hasattr(source, "window")
    assert source.importer_options() == {"missing": "error"}
    # an unknown key is named with the keys of that format, not the union's tag in its path
    with pytest.raises(ConfigError, match=r"data.source.colour: unknown key; known keys in data.source: "
                                          r"format, missing, paths"):
        load_config([], [*ts, "data.source.colour=red"])
    # a config dumped by a recur whose source held every format's keys (at their defaults) loads
    assert load_config([], [*ts, "data.source.window=64", "data.source.level=char"]).data.source == source


def test_source_format_must_fit_the_task():
    with pytest.raises(ConfigError,
                       match="data.source.format 'ts' imports classify data, but data.task is 'lm'"):
        load_config([], ["data.task=lm", "data.source.format=ts", "data.source.paths=[a.ts]"])


def test_gate_metric_defaults_per_task_and_is_checked():
    assert RecurConfig().gate_metric == "accuracy"
    assert load_config([], ["registry.metric=macro_f1"]).gate_metric == "macro_f1"
    with pytest.raises(ConfigError, match=r"registry.metric must be one of \['accuracy', 'macro_f1'\]"):
        load_config([], ["registry.metric=bleu"])


def test_relative_paths_mean_the_directory_recur_runs_from(tmp_path):
    """Ray runs Tune trials and jobs in directories of their own: every local path of a config is
    made absolute against the run's directory first; URIs and absolute paths are kept."""
    from pipeline.config import with_absolute_paths

    cfg = load_config([], ["data.root=recur-runs/datasets/jv", "tracking.runs_dir=runs",
                           "tracking.storage_path=ckpt", "model.embeddings=~/glove.txt",
                           "data.source={format: ts, paths: "
                           "[builtin://JapaneseVowels/JapaneseVowels_TRAIN.ts, raw/a_TEST.ts]}"])
    out = with_absolute_paths(cfg, tmp_path, environ={"MLFLOW_TRACKING_URI": "sqlite:///m.db"})
    assert out.data.root == str(tmp_path / "recur-runs/datasets/jv")
    assert out.tracking.runs_dir == str(tmp_path / "runs")
    assert out.tracking.storage_path == str(tmp_path / "ckpt")
    assert out.model.embeddings == "~/glove.txt"  # already absolute: kept as written
    assert with_absolute_paths(load_config([], ["model.embeddings=v/glove.txt"]), tmp_path,
                               environ={}).model.embeddings == str(tmp_path / "v/glove.txt")
    assert out.tracking.tracking_uri == f"sqlite:///{tmp_path}/m.db"  # the variable's store, absolute
    assert out.data.source.paths == ["builtin://JapaneseVowels/JapaneseVowels_TRAIN.ts",
                                     str(tmp_path / "raw/a_TEST.ts")]
    remote = load_config([], ["data.root=s3://bucket/jv", "tracking.storage_path=s3://bucket/ckpt",
                              f"tracking.runs_dir={tmp_path}", "tracking.tracking_uri=http://mlflow:5000",
                              "model.embeddings=s3://bucket/glove.6B.100d.txt"])
    assert with_absolute_paths(remote, tmp_path, environ={}) == remote
