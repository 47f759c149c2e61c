"""What `recur submit` sends: the entry point's argv, and the config paths made absolute.

A job runs in a copy of the working dir that Ray unpacks on the cluster, so a relative path in a
config (`data.root`, `tracking.runs_dir`, a `sqlite:///` tracking URI, `data.source.paths`)
would point inside that throwaway copy: the dataset would not be found, and the MLflow runs and
checkpoints would vanish with the copy. `plan_job` resolves those paths on the submitting
machine, where the user meant them, and passes them to the job as `--set` overrides. For a
cluster on this machine that is all it takes; for a remote cluster the paths must be visible at
the same place on every node (a shared filesystem), and a local sqlite/file MLflow store that
the user did not name explicitly is refused: the runs would land on the cluster's disks, out of
reach of `recur ui` and `recur models` here.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cluster.client import WORKING_DIR_EXCLUDES, is_local_address
from pipeline.config import (
    RecurConfig,
    absolute_store_uri,
    load_config,
    parse_override,
    relative_paths,
)
from pipeline.errors import CommandError

# `recur submit --entry X` runs this script of the working dir.
ENTRIES = {
    "run": "jobs/run_pipeline.py",
    "train": "jobs/train.py",
    "tune": "jobs/tune.py",
    "retrain": "jobs/retrain.py",
    "predict": "jobs/predict.py",
}
# `recur predict` takes the MLflow store as options; the configs' values become these
PREDICT_STORE_FLAGS = {"tracking.runs_dir": "--runs-dir", "tracking.tracking_uri": "--tracking-uri"}


@dataclass(frozen=True)
class LocalizedPath:
    key: str  # dotted config key
    given: Any  # as configured (relative)
    value: Any  # absolute, on the submitting machine

    @property
    def override(self) -> str:
        # JSON is YAML, so `--set` parses it back to exactly this string or list
        return f"{self.key}={json.dumps(self.value)}"


@dataclass
class JobPlan:
    entrypoint: list[str]
    submission_id: str
    metadata: dict[str, str]
    localized: list[LocalizedPath] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: RecurConfig | None = None


def is_local_store(uri: str) -> bool:
    """A tracking URI that is a file on some machine's disk (sqlite, file:, a plain path)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def localize_paths(cfg: RecurConfig, *, base: Path, environ: dict[str, str] | None = None
                   ) -> list[LocalizedPath]:
    """Relative paths of `cfg` (and of a local MLFLOW_TRACKING_URI) made absolute against `base`."""
    return [LocalizedPath(key, given, value) for key, given, value in relative_paths(cfg, base, environ)]


def _upload_filter(root: Path):
    """True for a path Ray would leave out of the upload: WORKING_DIR_EXCLUDES, .gitignore and
    .rayignore, matched by Ray's own functions."""
    try:
        from ray._private.runtime_env.packaging import _get_excludes, get_excludes_from_ignore_files
    except ImportError:  # moved in another Ray version: the check is a courtesy, skip it
        return lambda path: False
    quiet = logging.getLogger(__name__ + ".ignore_files")
    quiet.setLevel(logging.WARNING)  # Ray logs every ignore file it reads at INFO
    gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    matchers = [_get_excludes(root, list(WORKING_DIR_EXCLUDES)),
                *get_excludes_from_ignore_files(root, include_gitignore=gitignore, logger=quiet)]

    def excluded(path: Path) -> bool:
        return any(match(p) for p in (path, *path.parents) if p != root and root in p.parents
                   for match in matchers)

    return excluded


def config_args(configs: list[str], working_dir: Path) -> list[str]:
    """Config paths as the job sees them: relative to the uploaded working dir.

    A config outside the working dir, or in a part of it that is not uploaded, would not be
    there on the cluster: that is an error naming the file.
    """
    root = working_dir.resolve()
    excluded = _upload_filter(root)
    args = []
    for config in configs:
        path = Path(config).expanduser().resolve()
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            raise CommandError(
                f"config {config} is outside the working dir {root}, which is all the job gets: "
                "copy it into the working dir or pass --working-dir"
            ) from None
        if excluded(path):
            raise CommandError(
                f"config {config} is in a part of the working dir that is not uploaded ({rel} matches "
                "the excludes or .gitignore): put it elsewhere in the working dir, e.g. configs/"
            )
        args.append(rel)
    return args


def plan_job(configs: list[str], overrides: list[str], *, entry: str = "run",
             address: str, working_dir: str = ".", extra_args: list[str] | None = None,
             environ: dict[str, str] | None = None, cwd: Path | None = None) -> JobPlan:
    """Validate the config here, then build the job's argv with absolute paths.

    run/train/tune/retrain take `--config`/`--set`; `extra_args` are appended. predict takes
    its own arguments (`extra_args`: MODEL --data DIR --out DIR ...), checked here with its
    parser; the configs only give it tracking settings, passed as `--config`, `--runs-dir` and
    `--tracking-uri`. Raises ConfigError for an invalid config and CommandError for a job that
    could not work.
    """
    environ = os.environ if environ is None else environ
    extra_args = list(extra_args or [])
    base = (cwd or Path.cwd()).resolve()
    wdir = (base / Path(working_dir).expanduser()).resolve()
    if entry not in ENTRIES:
        raise CommandError(f"unknown entry {entry!r}; one of {', '.join(ENTRIES)}")
    script = ENTRIES[entry]
    if not (wdir / script).is_file():
        raise CommandError(f"{script} is not in the working dir {wdir}; `--entry {entry}` runs it")
    if not configs and entry != "predict":
        raise CommandError(f"--entry {entry} needs at least one CONFIG")
    if overrides and entry == "predict":
        raise CommandError("--set does not apply to --entry predict, which takes a model and a dataset: "
                           "recur submit [CONFIG...] --entry predict --entry-args MODEL --data DIR --out DIR")
    for text in overrides:
        parse_override(text)  # a malformed --set fails here, not on the cluster
    cfg = load_config([base / c for c in configs], overrides)
    rel_configs = config_args([str(base / c) for c in configs], wdir)
    localized = localize_paths(cfg, base=base, environ=environ)
    given: dict[str, str] = {}
    if entry == "predict":
        tail, given, named = _predict_args(extra_args, base=base)
        # predict reads only the store from the configs, and its own arguments win
        localized = [p for p in localized
                     if p.key in PREDICT_STORE_FLAGS and PREDICT_STORE_FLAGS[p.key] not in given] + named
    keys = {p.key for p in localized}
    by_key = {p.key: p.value for p in localized}

    warnings: list[str] = []
    runs_dir = given.get("--runs-dir") or by_key.get("tracking.runs_dir", cfg.tracking.runs_dir)
    explicit = given.get("--tracking-uri") or cfg.tracking.tracking_uri or environ.get("MLFLOW_TRACKING_URI")
    # what the job will use: its arguments, the config, the forwarded env var, else sqlite under runs_dir
    uri = (given.get("--tracking-uri") or by_key.get("tracking.tracking_uri") or explicit
           or f"sqlite:///{Path(runs_dir) / 'mlflow.db'}")
    relative_store = bool(keys & {"tracking.tracking_uri", "--tracking-uri"})
    if not is_local_address(address):
        if is_local_store(uri) and (not explicit or relative_store):
            raise CommandError(
                f"the job would use a local MLflow store ({uri}) on the nodes of the cluster at "
                f"{address}, out of reach of `recur ui` and `recur models` here. Set "
                "MLFLOW_TRACKING_URI (it is forwarded to the job) or tracking.tracking_uri to a "
                "tracking server both can reach (e.g. http://HOST:5000 from `mlflow server`), or to "
                "an absolute sqlite://// path on a filesystem that every node shares."
            )
        if is_local_store(uri):
            warnings.append(f"MLflow store {uri} must be on a filesystem shared by every node of the "
                            "cluster (sqlite over a network filesystem is fragile; a server is better)")
        elif is_local_address(uri):
            warnings.append(f"MLflow tracking URI {uri} names 127.0.0.1: on the cluster's nodes that is "
                            "the node itself; use an address the nodes can reach")
        for p in localized:
            warnings.append(f"{p.key}: {p.value} must exist at that path on every node of the cluster "
                            "(a shared filesystem)")

    argv = ["python", script]
    if entry == "predict":
        argv += tail
        for c in rel_configs:
            argv += ["--config", c]
        for key, flag in PREDICT_STORE_FLAGS.items():
            if key in keys:  # resolved from the config, not named by predict's arguments
                argv += [flag, by_key[key]]
    else:
        # a user's --set of a key resolved here is replaced by its absolute form
        kept = [o for o in overrides if ".".join(parse_override(o)[0]) not in keys]
        for c in rel_configs:
            argv += ["--config", c]
        for o in [*kept, *(p.override for p in localized)]:
            argv += ["--set", o]
        argv += extra_args
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return JobPlan(
        entrypoint=argv,
        submission_id=f"recur-{entry}-{stamp}-{secrets.token_hex(3)}",
        metadata={"recur_entry": entry, "recur_configs": " ".join(rel_configs)},
        localized=localized, warnings=warnings, config=cfg,
    )


def _predict_args(args: list[str], *, base: Path
                  ) -> tuple[list[str], dict[str, str], list[LocalizedPath]]:
    """predict's arguments checked with its own parser, local paths made absolute.

    Returns the arguments, the store options they name ({"--runs-dir": ..., "--tracking-uri":
    ...}, absolute) and what was resolved.
    """
    import argparse

    from pipeline.inference.arguments import add_arguments

    class Parser(argparse.ArgumentParser):
        def error(self, message: str):  # argparse would print usage and exit
            raise CommandError(f"--entry predict: {message} (arguments after --entry-args: MODEL "
                                 "--data DIR --out DIR [...], as for `recur predict`)")

    parser = Parser(prog="jobs/predict.py", add_help=False)
    add_arguments(parser)
    parsed = parser.parse_args(args)
    if parsed.config:
        raise CommandError("--entry predict: give configs as CONFIG arguments of recur submit, "
                             "not --config after --entry-args")
    resolved: list[LocalizedPath] = []
    out = list(args)
    for i, token in enumerate(out):
        flag, eq, value = token.partition("=")
        if flag not in ("--data", "--out", "--runs-dir", "--tracking-uri"):
            continue
        if not eq:
            if i + 1 >= len(out):
                continue
            value = out[i + 1]
        if flag == "--tracking-uri":
            absolute = absolute_store_uri(value, base)
        elif "://" in value or os.path.isabs(os.path.expanduser(value)):
            absolute = None  # a URI (--out s3://...) or already absolute
        else:
            absolute = str((base / os.path.expanduser(value)).resolve())
        if absolute is None:
            continue
        resolved.append(LocalizedPath(flag, value, absolute))
        if eq:
            out[i] = f"{flag}={absolute}"
        else:
            out[i + 1] = absolute
    given = {flag: value for flag, value in (("--runs-dir", parsed.runs_dir),
                                             ("--tracking-uri", parsed.tracking_uri)) if value}
    given.update({p.key: p.value for p in resolved if p.key in given})
    return out, given, resolved
