"""`recur retrain`: fine-tune the current @champion on the newest data version, then the usual gate.

The champion's weights, preprocessing (normalization statistics, labels, vocabularies) and
architecture are kept; its optimizer state and epoch count are not. A dataset whose labels,
channels or vocabulary differ from the champion's cannot be fine-tuned on (the output layer or
the embeddings would mean something else), and neither can a config that builds another model:
both are refused with what differs. `--from-scratch` trains a new model instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.config import ConfigError, RecurConfig
from pipeline.data.dataset import Manifest
from pipeline.workflow.steps import FineTune

log = logging.getLogger(__name__)


class RetrainError(ConfigError):
    """The champion cannot be fine-tuned on this data or with this config."""


def champion_to_fine_tune(cfg: RecurConfig, tracking_uri: str) -> FineTune:
    """Download the champion of `registry.model_name` and describe it as a fine-tune start."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.data.preprocess import Preprocessing
    from pipeline.training.checkpoint import CHECKPOINT_FILE, load_checkpoint

    name = cfg.registry.model_name
    try:
        version = MlflowClient(tracking_uri).get_model_version_by_alias(name, "champion")
    except MlflowException:
        raise RetrainError(f"recur retrain: model {name!r} has no @champion at {tracking_uri}; train one "
                           "with `recur run`, or pass --from-scratch") from None
    source = f"models:/{name}/{version.version}"
    target = Path(cfg.tracking.runs_dir).resolve() / "retrain" / f"{name}-v{version.version}"
    if not any(target.rglob(CHECKPOINT_FILE)):
        target.mkdir(parents=True, exist_ok=True)
        from pipeline.tracking.store import use_tracking_uri

        with use_tracking_uri(tracking_uri):  # models:/ URIs resolve through the registry URI
            mlflow.artifacts.download_artifacts(source, dst_path=str(target))
    found = sorted(target.rglob(CHECKPOINT_FILE))
    if not found:
        raise RetrainError(f"recur retrain: {source} holds no {CHECKPOINT_FILE}; it was not logged by recur")
    state = load_checkpoint(str(found[0]))
    log.info("fine-tuning from %s (run %s)", source, version.run_id)
    return FineTune(source=source, checkpoint_dir=str(found[0].parent),
                    preprocessing=Preprocessing.from_dict(state["preprocessing"]))


def check_fine_tune(cfg: RecurConfig, fine_tune: FineTune, manifest: Manifest) -> None:
    """Refuse data or a config the champion cannot continue on, naming every difference."""
    from pipeline.data.preprocess import Preprocessing
    from pipeline.tasks import build_task
    from pipeline.training.checkpoint import load_checkpoint

    old, new = fine_tune.preprocessing, Preprocessing.from_manifest(manifest)
    problems = []
    if old.labels != new.labels:
        added = [x for x in new.labels if x not in old.labels]
        problems.append(f"labels differ (new: {added or 'none'}; champion {old.labels}, data {new.labels})")
    if old.num_channels != new.num_channels:
        problems.append(f"channels differ: champion {old.num_channels}, data {new.num_channels}")
    for field in ("vocab", "target_vocab"):
        a, b = getattr(old, field), getattr(new, field)
        if a != b:
            problems.append(f"{field} differs: champion {len(a)} tokens, data {len(b)} "
                            f"({len(set(b) - set(a))} new)")
    state = load_checkpoint(fine_tune.checkpoint_dir)
    built = build_task(cfg, old).build_model()
    args = getattr(built, "model_args", {})
    if type(built).__name__ != state["model_class"] or args != state["model_args"]:
        diff = {k: (state["model_args"].get(k), args.get(k)) for k in set(args) | set(state["model_args"])
                if state["model_args"].get(k) != args.get(k)}
        problems.append(f"the config builds another model than {fine_tune.source}: "
                        + ", ".join(f"{k} champion {a!r} config {b!r}" for k, (a, b) in sorted(diff.items()))
                        if diff else f"the config builds {type(built).__name__}, the champion is "
                        f"{state['model_class']}")
    if problems:
        raise RetrainError(f"recur retrain: cannot fine-tune {fine_tune.source} on {cfg.data.root}: "
                           + "; ".join(problems) + ". Train a new model with --from-scratch.")

