"""Search spaces written in YAML, over any config key, turned into Ray Tune's search space.

    tune:
      space:
        model.cell: {choice: [lstm, gru]}
        train.lr: {loguniform: [1.0e-4, 1.0e-2]}
        model.hidden_size: {quniform: [32, 128, 32]}
        model.num_layers: {randint: [1, 3]}        # 1 or 2: the upper bound is excluded, as in Tune
        train.dropout: {uniform: [0.0, 0.3]}
        model.bidirectional: {grid: [true, false]}  # every value, in every sample

Keys are checked against the config model before anything starts (an unknown key is named with
the keys its section knows), and so is one value of every kind from each domain, so a search
never dies in trial 7 on a typo. A trial's config is the base config with the sampled values
set at their dotted keys, validated like any config.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from pipeline.errors import UserError

KINDS: dict[str, str] = {
    "choice": "a non-empty list of values",
    "grid": "a non-empty list of values (each is tried in every sample)",
    "uniform": "[low, high] numbers",
    "loguniform": "[low, high] positive numbers",
    "quniform": "[low, high, q] numbers (multiples of q)",
    "randint": "[low, high] integers (high excluded)",
}


class SpaceError(UserError, ValueError):
    """A search space entry is invalid; the message names the key and what was expected."""


def parse_space(space: dict[str, Any]) -> dict[str, tuple[str, list[Any]]]:
    """{dotted key: {kind: args}} -> {dotted key: (kind, args)} with the arguments checked."""
    parsed: dict[str, tuple[str, list[Any]]] = {}
    for key, spec in space.items():
        where = f"tune.space.{key}"
        if not isinstance(spec, dict) or len(spec) != 1:
            raise SpaceError(f"{where}: expected one of {{{', '.join(KINDS)}}}: ARGS, got {spec!r}")
        ((kind, args),) = spec.items()
        if kind not in KINDS:
            raise SpaceError(f"{where}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        if not isinstance(args, list) or not args:
            raise SpaceError(f"{where}.{kind}: expected {KINDS[kind]}, got {args!r}")
        if kind in ("uniform", "loguniform", "quniform", "randint"):
            size = 3 if kind == "quniform" else 2
            numbers = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
            if len(args) != size or not numbers or not args[0] < args[1]:
                raise SpaceError(f"{where}.{kind}: expected {KINDS[kind]} with low < high, got {args!r}")
            if kind == "loguniform" and args[0] <= 0:
                raise SpaceError(f"{where}.loguniform: bounds must be > 0, got {args!r}")
            if kind == "randint" and not all(isinstance(a, int) for a in args):
                raise SpaceError(f"{where}.randint: bounds must be integers, got {args!r}")
            if kind == "quniform" and not args[2] > 0:
                raise SpaceError(f"{where}.quniform: q must be > 0, got {args[2]!r}")
        parsed[key] = (kind, list(args))
    return parsed


def probe_values(kind: str, args: list[Any]) -> list[Any]:
    """Values a domain can produce that are worth validating: every listed value, or the bounds."""
    if kind in ("choice", "grid"):
        return list(args)
    if kind == "randint":
        return [args[0], args[1] - 1]
    if kind == "quniform":
        low, high, q = args
        values = [math.ceil(low / q) * q, math.floor(high / q) * q]
        return [int(v) if float(v).is_integer() and all(isinstance(a, int) for a in args) else v
                for v in values]
    return [args[0], args[1]]


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of `tree` with `value` at the dotted `key` (sections created as needed)."""
    out = copy.deepcopy(tree)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpaceError(f"tune.space.{key}: {part} is not a section")
    node[parts[-1]] = value
    return out


def trial_config_dict(base: dict[str, Any], sampled: dict[str, Any]) -> dict[str, Any]:
    """The base config (as a dict) with every sampled value set at its dotted key."""
    tree = base
    for key, value in sampled.items():
        tree = set_dotted(tree, key, value)
    return tree


def check_space(base: dict[str, Any], parsed: dict[str, tuple[str, list[Any]]]) -> None:
    """Validate each key and each probe value against the config model, one key at a time."""
    from pipeline.config import ConfigError, validate_config

    for key, (kind, args) in parsed.items():
        for value in probe_values(kind, args):
            try:
                validate_config(set_dotted(base, key, value))
            except ConfigError as exc:
                raise SpaceError(f"tune.space.{key}: {kind} value {value!r} is not a valid config "
                                 f"value:\n{exc}") from None


def to_tune(parsed: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    """Ray Tune's `param_space` for the parsed space (keys stay dotted)."""
    from ray import tune

    make = {
        "choice": lambda a: tune.choice(a),
        "grid": lambda a: tune.grid_search(a),
        "uniform": lambda a: tune.uniform(a[0], a[1]),
        "loguniform": lambda a: tune.loguniform(a[0], a[1]),
        "quniform": lambda a: tune.quniform(a[0], a[1], a[2]),
        "randint": lambda a: tune.randint(a[0], a[1]),
    }
    return {key: make[kind](args) for key, (kind, args) in parsed.items()}
