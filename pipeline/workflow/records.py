"""Step records: what each workflow step ran on, what it produced, and whether it finished.

A record is keyed by the step's name, the hash of the config sections the step reads, and the
hashes of its inputs (the outputs of earlier steps; for ingest, the data hash). Records live as
JSON files under `<runs_dir>/steps/`, written atomically. A step whose key has a finished record
is skipped and its outputs reused; a crashed run therefore continues from its last finished step.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The steps of `recur run` in order; a run with a search (`recur tune`, `tune.enabled`) has `tune`
# in place of `train`: the best trial is the trained model. `predict` is `recur predict`'s step.
STEPS = ("ingest", "validate", "tune", "train", "evaluate", "register", "promote")
PREDICT = "predict"


def workflow_steps(tune: bool) -> tuple[str, ...]:
    """The steps one workflow runs: with `tune` in place of `train` when it searches."""
    return tuple(s for s in STEPS if s != ("train" if tune else "tune"))

# The config sections each step reads: changing any other key does not re-run it.
STEP_CONFIG: dict[str, tuple[str, ...]] = {
    "ingest": ("data",),
    "validate": ("data",),
    "tune": ("data", "model", "train", "resources", "tune"),
    "train": ("data", "model", "train", "resources"),
    "evaluate": ("data", "model", "train"),
    "register": ("registry.model_name", "registry.enabled"),
    "promote": ("registry",),
    PREDICT: (),  # its inputs say it all: the model version, the input data, the output and options
}

STEP_TAG = "recur.step."  # MLflow tags recur.step.<step> (status), .key, .seconds, .error

SUCCEEDED, FAILED, RUNNING, SKIPPED = "succeeded", "failed", "running", "skipped"
INTERRUPTED = "interrupted"  # Ctrl-C: ran again next time (a study: `recur tune --resume` continues it)


def hash_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def step_config(config: dict[str, Any], step: str) -> dict[str, Any]:
    """The parts of the config (as JSON) that `step` reads."""
    picked: dict[str, Any] = {}
    for key in STEP_CONFIG[step]:
        value: Any = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        picked[key] = value
    return picked


@dataclass
class StepRecord:
    step: str
    key: str
    config_hash: str
    input_hashes: dict[str, str]
    data_hash: str
    status: str = RUNNING
    started_at: str = ""
    seconds: float = 0.0
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def output_hash(self) -> str:
        return hash_json(self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "output_hash": self.output_hash}


# Steps whose results live in a store (MLflow runs and models, the registry, Ray's checkpoint
# storage): their records are keyed by where that store is (`store_hash`), so the same config
# against another MLflow server runs them again there instead of reusing another store's run.
STORE_STEPS = ("tune", "train", "evaluate", "register", "promote")


def store_hash(*, tracking_uri: str, registry_uri: str, storage_path: str) -> str:
    """One hash of everything that decides where a step's results live. A hash, not the URIs:
    records are plain files, and a URI may hold a password."""
    return hash_json({"tracking_uri": tracking_uri, "registry_uri": registry_uri,
                      "storage_path": storage_path})


def new_record(step: str, config: dict[str, Any], inputs: dict[str, str], data_hash: str) -> StepRecord:
    config_hash = hash_json(step_config(config, step))
    key = f"{step}-{hash_json([step, config_hash, sorted(inputs.items())])}"
    return StepRecord(step=step, key=key, config_hash=config_hash, input_hashes=dict(inputs),
                      data_hash=data_hash,
                      started_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


class StepStore:
    """Step records as JSON files in one folder."""

    def __init__(self, runs_dir: str) -> None:
        self.root = Path(runs_dir).resolve() / "steps"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> StepRecord | None:
        path = self.path(key)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data.pop("output_hash", None)
        return StepRecord(**data)

    def put(self, record: StepRecord) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.path(record.key).with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record.to_dict(), indent=2, default=str))
        os.replace(tmp, self.path(record.key))  # a reader never sees half a record
