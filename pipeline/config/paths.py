"""The config's paths and store URIs: made absolute against where recur runs (Ray runs trials and
jobs in directories of their own), or relative again for a job's working dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline.config.recur import RecurConfig

BUILTIN_SCHEME = "builtin://"  # data shipped with recur (pipeline/data/builtin)
MUSIC21_SCHEME = "music21:"  # the corpus inside the music21 package (format music)


def absolute_store_uri(uri: str, base: Path) -> str | None:
    """A local MLflow store URI (`sqlite:///rel`, `file:rel`, a plain path) with its path made
    absolute against `base`; None when it already is absolute or is no local path (a server,
    sqlite in memory)."""
    if uri.startswith("sqlite:///"):
        path = uri.removeprefix("sqlite:///")
        return None if not path or path.startswith("/") else f"sqlite:///{(base / path).resolve()}"
    if uri.startswith("file://"):
        return None  # file:///abs
    if uri.startswith("file:"):
        return (base / uri.removeprefix("file:")).resolve().as_uri()
    if "://" not in uri and not os.path.isabs(os.path.expanduser(uri)):
        return str((base / uri).resolve())
    return None


def relative_paths(cfg: RecurConfig, base: Path, environ: dict[str, str] | None = None
                   ) -> list[tuple[str, Any, Any]]:
    """(dotted key, value as configured, value made absolute against `base`) for every local
    path of `cfg` that is relative: data.root, data.source.paths (not builtin://, music21: or URLs),
    tracking.runs_dir, tracking.storage_path, model.embeddings, and tracking.tracking_uri or, when
    that is unset, a local store in MLFLOW_TRACKING_URI (it goes in as tracking.tracking_uri, which
    wins)."""
    environ = os.environ if environ is None else environ
    found: list[tuple[str, Any, Any]] = []

    def local(path: str) -> str | None:
        expanded = os.path.expanduser(path)
        return None if os.path.isabs(expanded) else str((base / expanded).resolve())

    for key, value in (("data.root", cfg.data.root), ("tracking.runs_dir", cfg.tracking.runs_dir),
                       ("tracking.storage_path", cfg.tracking.storage_path),
                       ("model.embeddings", cfg.model.embeddings)):
        if value and "://" not in value and (absolute := local(value)) is not None:
            found.append((key, value, absolute))
    uri = cfg.tracking.tracking_uri or environ.get("MLFLOW_TRACKING_URI")
    if uri and (absolute := absolute_store_uri(uri, base)) is not None:
        found.append(("tracking.tracking_uri", uri, absolute))
    if cfg.data.source is not None:
        paths = list(cfg.data.source.paths)
        resolved = [p if p.startswith((BUILTIN_SCHEME, MUSIC21_SCHEME))
                    or ("://" in p and not p.startswith("file://"))
                    else local(p.removeprefix("file://")) or p for p in paths]
        if resolved != paths:
            found.append(("data.source.paths", paths, resolved))
    return found


def with_absolute_paths(cfg: RecurConfig, base: Path | None = None,
                        environ: dict[str, str] | None = None) -> RecurConfig:
    """`cfg` with its relative paths (`relative_paths`) made absolute against `base`, by default
    the directory recur was run from. Done before anything is handed to Ray: a Tune trial runs
    in a working directory of its own, where `recur-runs/datasets/...` names nothing."""
    tree = cfg.model_dump(mode="json")
    for key, _, value in relative_paths(cfg, (base or Path.cwd()).resolve(), environ):
        *sections, name = key.split(".")
        node = tree
        for section in sections:
            node = node[section]
        node[name] = value
    return RecurConfig.model_validate(tree)
