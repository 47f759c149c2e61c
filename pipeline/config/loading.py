"""Config text to a `RecurConfig`: YAML files merged left to right, `--set` overrides, errors that
name the key and the file it came from; and back to YAML, JSON schema and flat MLflow params."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from pipeline.config.base import ConfigError
from pipeline.config.recur import RecurConfig
from pipeline.config.source import SOURCE_MODELS


def _deep_merge(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _origins(tree: dict, source: str, prefix: str = "", into: dict | None = None) -> dict[str, str]:
    """Map every dotted key in `tree` to the file (or override) it came from."""
    into = {} if into is None else into
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        into[dotted] = source
        if isinstance(value, dict):
            _origins(value, source, f"{dotted}.", into)
    return into


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=0.003` -> (["train", "lr"], 0.003); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, for example train.lr=0.003")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: empty key")
    return key.split("."), _load_yaml(raw, f"--set {text!r}") if raw.strip() else None


MAX_YAML_VALUES = 100_000  # values in a config after expanding its aliases (a big one holds ~1,000)


def _load_yaml(text: str, where: str) -> Any:
    """YAML text (a config file, a --set value) as Python; ConfigError in one line naming `where`
    and the line and column when it is not valid YAML, or when its aliases expand to more than
    MAX_YAML_VALUES values (a few hundred bytes of nested aliases can expand to billions)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"{where}: not valid YAML{at}: {what}") from None
    count, stack = 0, [data]
    while stack:  # every value as often as aliases repeat it, stopping at the bound
        node = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise ConfigError(f"{where}: more than {MAX_YAML_VALUES} values once its aliases (*name) are "
                              "expanded; a config needs far fewer: expand the aliases by hand or use "
                              "fewer of them")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return data


def _read_yaml(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                          f"{exc.start}); save the config as UTF-8") from None
    data = _load_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load_config(
    paths: list[str | os.PathLike] | None = None, overrides: list[str] | None = None
) -> RecurConfig:
    """Merge YAML files left to right, apply `--set` overrides, validate.

    Errors name the dotted key, the file or override it came from, and what was expected.
    """
    merged: dict = {}
    origin: dict[str, str] = {}
    for path in paths or []:
        tree = _read_yaml(Path(path))
        merged = _deep_merge(merged, tree)
        _origins(tree, str(path), into=origin)
    for text in overrides or []:
        keys, value = parse_override(text)
        node = {keys[-1]: value}
        for key in reversed(keys[:-1]):
            node = {key: node}
        merged = _deep_merge(merged, node)
        _origins(node, f"--set {text}", into=origin)
    return validate_config(merged, origin)


def validate_config(tree: dict, origin: dict[str, str] | None = None) -> RecurConfig:
    try:
        return RecurConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin or {})) from None


def _format_errors(exc: ValidationError, origin: dict[str, str]) -> str:
    lines = ["invalid config:"]
    for err in exc.errors():
        loc, tag = _without_source_tag(err["loc"])
        key = ".".join(str(p) for p in loc)
        where = _origin_of(key, origin)
        if not err["loc"]:  # a cross-field check: its message names the keys itself
            lines.append(f"  {err['msg'].removeprefix('Value error, ')}")
            continue
        if err["type"] == "value_error" and isinstance(err.get("input"), dict):
            # a section's own check (e.g. data.source options): its message names the keys
            what = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {what}{f'  [from {where}]' if where else ''}")
            continue
        if err["type"] == "extra_forbidden":
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            known = (sorted(SOURCE_MODELS[tag].model_fields) if tag and parent == "data.source"
                     else _known_keys(parent))
            what = f"unknown key; known keys{' in ' + parent if parent else ''}: {', '.join(known)}"
        else:
            what = f"{err['msg'].removeprefix('Value error, ')} (got {err.get('input')!r})"
        lines.append(f"  {key or '<root>'}: {what}{f'  [from {where}]' if where else ''}")
    return "\n".join(lines)


def _without_source_tag(loc: tuple) -> tuple[tuple, str | None]:
    """An error's location without the format pydantic puts after `data.source` (its union's tag):
    `data.source.window`, not `data.source.csv.window`; and that format."""
    for i in range(1, len(loc) - 1):
        if loc[i - 1:i + 1] == ("data", "source") and loc[i + 1] in SOURCE_MODELS:
            return loc[:i + 1] + loc[i + 2:], loc[i + 1]
    return tuple(loc), None


def _origin_of(key: str, origin: dict[str, str]) -> str | None:
    while key:
        if key in origin:
            return origin[key]
        key = key.rsplit(".", 1)[0] if "." in key else ""
    return None


def _known_keys(dotted_section: str) -> list[str]:
    model: type[BaseModel] = RecurConfig
    for part in filter(None, dotted_section.split(".")):
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields)


def dump_yaml(cfg: RecurConfig | dict[str, Any]) -> str:
    """The config (or its dict, e.g. a redacted copy) as YAML, keys in schema order."""
    return yaml.safe_dump(cfg if isinstance(cfg, dict) else cfg.model_dump(mode="json"), sort_keys=False)


def json_schema() -> str:
    return json.dumps(RecurConfig.model_json_schema(), indent=2)


def flatten(cfg: RecurConfig) -> dict[str, Any]:
    """Dotted keys -> scalar values (lists as JSON), for MLflow params."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = json.dumps(node) if isinstance(node, list) else node

    walk(cfg.model_dump(mode="json"), "")
    return out
