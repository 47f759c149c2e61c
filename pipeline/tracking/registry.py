"""Model registry: register every trained model, promote through one gate.

A new version becomes `@champion` only if it beats the current champion on the SAME test data
(this run's test split, both models loaded from the registry and scored by the same code) by more
than `registry.min_improvement`; otherwise it becomes `@challenger`.

Before that, the version must beat its task's trivial baseline (`Task.baseline`: majority class,
seasonal naive, ...) on the gate metric, strictly. One that does not is never made `@champion`,
not even when there is no champion yet: it stays registered with no alias, decision "rejected",
and its tags say why (`recur.reason`, `recur.baseline_<metric>`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.tracking.integrity import CONTENT_TAG, download_verified, model_digest, model_dir
from pipeline.tracking.model_ref import ModelNotFound, ModelSpec
from pipeline.tracking.redact import redact_params, redact_text

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER, REJECTED = "champion", "challenger", "rejected"


def _missing(exc: MlflowException) -> bool:
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _not_found(client: MlflowClient, tracking_uri: str, model_name: str, version: str | None = None
               ) -> ModelNotFound:
    """`recur models ...` named a model (or a version of it) the registry at `tracking_uri` lacks."""
    where = redact_text(client._registry_uri or tracking_uri)
    if version is None:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        known = f"registered models there: {', '.join(names)}" if names else "it has no registered model yet"
        return ModelNotFound(f"no registered model {model_name!r} at {where} ({known}); check the name, "
                             "or --tracking-uri / MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI")
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{model_name}'"))
    return ModelNotFound(f"{model_name} has no version {version} at {where} (versions: "
                         f"{', '.join(map(str, versions)) or 'none'}); `recur models list {model_name}` "
                         "shows them with their aliases")


@dataclass
class Decision:
    model_name: str
    version: str
    alias: str | None  # champion | challenger; None when rejected
    decision: str  # champion | challenger | rejected (did not beat the trivial baseline)
    promoted: bool
    metric: str
    candidate_score: float
    champion_version: str | None
    champion_score: float | None
    min_improvement: float
    reason: str
    run_id: str
    data_hash: str
    decided_at: str
    baseline_name: str  # e.g. "majority-class"
    baseline_score: float  # the trivial baseline's `metric` on the same test data
    # every score `Task.baseline` returned: the trivial baseline's gate metrics and references
    # that are no gate bar (classify's nn1_euclidean_accuracy)
    baselines: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_model(model_name: str, version: str, inputs: Any, score: Callable[[Any], dict[str, float]],
                metric: str, *, tracking_uri: str | None = None) -> float:
    """Load a registered version as MLflow serves it (its files checked first, `download_verified`),
    predict on `inputs`, and score the outputs."""
    model = mlflow.pyfunc.load_model(download_verified(model_name, version, model_dir(),
                                                       tracking_uri=tracking_uri))
    return float(score(model.predict(inputs))[metric])


def current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def decide(candidate: float, champion: float | None, min_improvement: float,
           higher_is_better: bool = True) -> tuple[bool, str]:
    """Promote when the candidate beats the champion by more than `min_improvement`.

    The margin is signed so that positive is better: candidate - champion when higher is better
    (accuracy, F1, BLEU), champion - candidate when lower is better (MASE, perplexity).
    """
    if champion is None:
        return True, "no current champion"
    if not (np.isfinite(candidate)):
        return False, f"the candidate's score {candidate} is not a number"
    margin = candidate - champion if higher_is_better else champion - candidate
    if margin > min_improvement:
        return True, f"beats the champion by {margin:+.4f} (> required {min_improvement:.4f})"
    return False, f"does not beat the champion by more than {min_improvement:.4f} (margin {margin:+.4f})"


# Scores this close to the baseline's, relative to it, are a tie: float32 rounding, e.g. a
# forecaster whose naive blend leans wholly on seasonal naive scores MASE 0.99999998.
TIE_TOLERANCE = 1e-6


def beats_baseline(candidate: float, baseline: float, higher_is_better: bool = True, *,
                   metric: str = "score", baseline_name: str = "trivial") -> tuple[bool, str]:
    """Whether the candidate is strictly better than the trivial baseline (no margin: a tie
    learned nothing the baseline did not know; scores within TIE_TOLERANCE of it, relative, are a
    tie); the reason names both scores."""
    better = "higher" if higher_is_better else "lower"
    versus = f"test {metric} {candidate:.4f} vs the {baseline_name} baseline {baseline:.4f}"
    if not np.isfinite(candidate):
        return False, f"{versus}: the candidate's score is not a finite number"
    margin = candidate - baseline if higher_is_better else baseline - candidate
    beats = margin > TIE_TOLERANCE * max(abs(baseline), 1e-12)
    if beats:
        return True, f"{versus}: beats it ({better} is better)"
    return False, (f"test {metric} {candidate:.4f} does not beat the {baseline_name} baseline "
                   f"{baseline:.4f} ({better} is better)")


def register_and_gate(*, tracking_uri: str, model_name: str, model_uri: str, run_id: str,
                      metric: str, higher_is_better: bool, min_improvement: float, inputs: Any,
                      score: Callable[[Any], dict[str, float]], data_hash: str,
                      baseline: dict[str, float], baseline_name: str) -> Decision:
    """Register `model_uri` as a new version, score it and the champion on the same data, set an alias.

    `inputs` are raw test inputs both models' `predict` takes; `score` turns a model's outputs into
    gate metrics (by names, not ids, so models with different vocabularies compare fairly);
    `baseline` the trivial baseline's scores on the same data (`Task.baseline`), named
    `baseline_name`. Call inside `store.use_tracking_uri(tracking_uri)`: registering and loading
    use the fluent API.
    """
    version = register_version(model_uri, model_name, run_id=run_id)
    return gate(tracking_uri=tracking_uri, model_name=model_name, version=version, run_id=run_id,
                metric=metric, higher_is_better=higher_is_better, min_improvement=min_improvement,
                inputs=inputs, score=score, data_hash=data_hash, baseline=baseline,
                baseline_name=baseline_name)


LINEAGE_ARTIFACT = "data/manifest.json"  # what RunTracker.log_dataset writes on every run
TAG_LIMIT = 5000  # MLflow's longest tag value


def register_version(model_uri: str, model_name: str, *, run_id: str) -> str:
    """A new version of `model_name` from a logged model; no alias yet (the gate sets one).

    The version is tagged with the lineage of the data its run trained on, read from the run's
    own manifest artifact: the data hash and the source files (URI, size, sha256, and for S3
    objects the ETag and version id).
    """
    import tempfile

    from pipeline.progress import dropping

    with tempfile.TemporaryDirectory(prefix="recur-register-") as tmp:  # the files as logged
        digest = model_digest(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
    tags = {"recur.run_id": run_id, **lineage_tags(run_id), CONTENT_TAG: digest}
    # MLflow prints these (not logs them): quiet mode leaves them out
    with dropping("Successfully registered model", "Registered model ", "Created version "):
        return str(mlflow.register_model(model_uri, model_name, tags=redact_params(tags)).version)


def lineage_tags(run_id: str) -> dict[str, str]:
    """recur.data_hash, recur.data_root and recur.sources (JSON) from the run's manifest."""
    import json

    try:
        manifest = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/{LINEAGE_ARTIFACT}"))
    except MlflowException:
        return {}  # a run logged without a dataset (older recur): nothing to tag
    run = mlflow.get_run(run_id)
    sources = [{k: v for k, v in src.items() if v is not None} for src in manifest.get("sources", [])]
    text = json.dumps(sources, separators=(",", ":"))
    if len(text) > TAG_LIMIT:  # the whole list is in the run's manifest artifact
        text = json.dumps({"count": len(sources), "see": f"runs:/{run_id}/{LINEAGE_ARTIFACT}"})
    root = next((i.dataset.source for i in run.inputs.dataset_inputs), "") if run.inputs else ""
    return {"recur.data_hash": manifest["data_hash"], "recur.sources": text,
            **({"recur.data_source": root[:TAG_LIMIT]} if root else {})}


def lineage(tracking_uri: str, model_uri: str) -> dict[str, Any]:
    """What `recur lineage MODEL@alias` prints: the version, its run, data hash and sources
    (`model_uri`: NAME@alias, NAME/version or NAME, as `recur predict` takes them)."""
    import json

    spec = ModelSpec.parse(model_uri)
    client = MlflowClient(tracking_uri)
    name = spec.name
    version = (client.get_model_version_by_alias(name, spec.alias) if spec.alias
               else client.get_model_version(name, str(spec.version)))
    tags = version.tags or {}
    sources = json.loads(tags.get("recur.sources", "[]"))
    if isinstance(sources, dict):  # too many for a tag: read them from the run's manifest
        from pipeline.tracking.store import use_tracking_uri

        with use_tracking_uri(tracking_uri):
            sources = json.loads(mlflow.artifacts.load_text(sources["see"]))["sources"]
    return {"model": name, "version": str(version.version), "aliases": list(version.aliases or []),
            "run_id": version.run_id, "data_hash": tags.get("recur.data_hash"),
            "data_source": tags.get("recur.data_source"), "sources": sources}


def gate(*, tracking_uri: str, model_name: str, version: str, run_id: str, metric: str,
         higher_is_better: bool, min_improvement: float, inputs: Any,
         score: Callable[[Any], dict[str, float]], data_hash: str,
         baseline: dict[str, float], baseline_name: str) -> Decision:
    """Score version `version` and the current champion on the same inputs; set @champion or
    @challenger, or no alias when the version does not beat its trivial baseline. Call inside
    `store.use_tracking_uri(tracking_uri)`.

    `baseline` holds the trivial baseline's scores on the same inputs (`Task.baseline`), `metric`
    among them; the version must be strictly better than `baseline[metric]` to be compared with
    the champion at all. A rejected version keeps no alias (the champion, if any, is still scored
    for the record), even when there is no champion: a model that learned nothing never serves.

    Another gate may set @champion while this one scores (two runs finishing together). So the
    champion is scored by its version number, and right before setting the alias the gate reads
    @champion again: if it moved, the new champion is scored and compared instead. The version
    replaced is recorded on the winner (`recur.replaced_champion`).
    """
    if metric not in baseline:
        raise ValueError(f"the gate metric {metric!r} (registry.metric) has no baseline score; the "
                         f"task's baseline gave {sorted(baseline)}")
    baseline_score = float(baseline[metric])
    client = MlflowClient(tracking_uri)
    candidate_score = score_model(model_name, str(version), inputs, score, metric,
                                  tracking_uri=tracking_uri)
    beats, baseline_reason = beats_baseline(candidate_score, baseline_score, higher_is_better,
                                            metric=metric, baseline_name=baseline_name)
    if not beats:
        return _reject(client, tracking_uri=tracking_uri, model_name=model_name, version=str(version),
                       run_id=run_id, metric=metric,
                       candidate_score=candidate_score, min_improvement=min_improvement, inputs=inputs,
                       score=score, data_hash=data_hash, reason=baseline_reason,
                       baseline_name=baseline_name, baseline=baseline)
    scores: dict[str, float] = {}  # champion version -> its score on these inputs
    champion = current_champion(client, model_name)
    for _ in range(MAX_RECHECKS):
        champion_score = None
        if champion is not None and champion.version != str(version):
            if champion.version not in scores:
                scores[champion.version] = score_model(model_name, champion.version, inputs, score,
                                                       metric, tracking_uri=tracking_uri)
            champion_score = scores[champion.version]
        if _version_of(champion) == str(version):  # gated again (`recur run --from promote`)
            champion_score, promoted, reason = candidate_score, True, "already @champion"
        else:
            promoted, reason = decide(candidate_score, champion_score, min_improvement, higher_is_better)
        now = current_champion(client, model_name)  # right before setting the alias
        if _version_of(now) == _version_of(champion):
            break
        log.info("@champion of %s moved from %s to %s while version %s was compared; comparing again",
                 model_name, _version_of(champion), _version_of(now), version)
        champion = now
    else:
        raise RuntimeError(f"@champion of {model_name} changed {MAX_RECHECKS} times while version "
                           f"{version} was compared; see `recur models list {model_name}` and "
                           "promote by hand")
    alias = CHAMPION if promoted else CHALLENGER
    client.set_registered_model_alias(model_name, alias, version)

    replaced = _version_of(champion) if promoted and _version_of(champion) != str(version) else None
    decision = Decision(
        model_name=model_name, version=str(version), alias=alias, decision=alias, promoted=promoted,
        metric=metric, candidate_score=candidate_score, champion_version=_version_of(champion),
        champion_score=champion_score, min_improvement=min_improvement, reason=reason,
        run_id=run_id, data_hash=data_hash,
        decided_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        baseline_name=baseline_name, baseline_score=baseline_score,
        baselines={k: float(v) for k, v in baseline.items()},
    )
    _tag_decision(client, decision, replaced=replaced)
    return decision


def _reject(client: MlflowClient, *, tracking_uri: str, model_name: str, version: str, run_id: str,
            metric: str,
            candidate_score: float, min_improvement: float, inputs: Any,
            score: Callable[[Any], dict[str, float]], data_hash: str, reason: str, baseline_name: str,
            baseline: dict[str, float]) -> Decision:
    """The decision for a version that does not beat its trivial baseline: no alias is set (nor
    taken away: a version promoted by hand keeps @champion), the champion is scored for the
    record only, and the version's tags say why."""
    champion = current_champion(client, model_name)
    champion_score = None
    if champion is not None:
        champion_score = (candidate_score if champion.version == version else
                          score_model(model_name, champion.version, inputs, score, metric,
                                      tracking_uri=tracking_uri))
    decision = Decision(
        model_name=model_name, version=version, alias=None, decision=REJECTED, promoted=False,
        metric=metric, candidate_score=candidate_score, champion_version=_version_of(champion),
        champion_score=champion_score, min_improvement=min_improvement, reason=reason, run_id=run_id,
        data_hash=data_hash, decided_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        baseline_name=baseline_name, baseline_score=float(baseline[metric]),
        baselines={k: float(v) for k, v in baseline.items()},
    )
    log.warning("%s version %s is not promoted: %s", model_name, version, reason)
    _tag_decision(client, decision, replaced=None)
    return decision


def _tag_decision(client: MlflowClient, d: Decision, *, replaced: str | None) -> None:
    """The decision on the version itself: what `recur models list` and the MLflow UI show."""
    tags = {
        "recur.data_hash": d.data_hash,
        "recur.metric": d.metric,
        f"recur.test_{d.metric}": f"{d.candidate_score:.6f}",
        "recur.decision": d.decision,
        "recur.reason": d.reason,
        "recur.baseline": d.baseline_name,
        **{f"recur.baseline_{name}": f"{value:.6f}" for name, value in d.baselines.items()},
    }
    if replaced is not None:
        tags["recur.replaced_champion"] = replaced
    for key, value in redact_params(tags).items():
        client.set_model_version_tag(d.model_name, d.version, key, str(value)[:TAG_LIMIT])


MAX_RECHECKS = 5  # how often a gate compares again when @champion moves under it


def _version_of(model_version: Any) -> str | None:
    return None if model_version is None else str(model_version.version)


def promote(tracking_uri: str, model_name: str, version: str) -> str | None:
    """Set `@champion` by hand (rollback); returns the version it replaced."""
    client = MlflowClient(tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException as exc:
        raise _not_found(client, tracking_uri, model_name) if _missing(exc) else exc from None
    try:
        client.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise _not_found(client, tracking_uri, model_name, str(version)) if _missing(exc) else exc from None
    previous = current_champion(client, model_name)
    client.set_registered_model_alias(model_name, CHAMPION, str(version))
    client.set_model_version_tag(model_name, str(version), "recur.decision", CHAMPION)
    client.set_model_version_tag(model_name, str(version), "recur.reason", "promoted by hand")
    if previous is not None and previous.version != str(version):
        client.set_model_version_tag(model_name, str(version), "recur.replaced_champion", previous.version)
    return previous.version if previous is not None else None


def list_versions(tracking_uri: str, model_name: str) -> list[dict[str, Any]]:
    """Versions (newest first) with aliases, gate metric and run id."""
    client = MlflowClient(tracking_uri)
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as exc:
        raise _not_found(client, tracking_uri, model_name) if _missing(exc) else exc from None
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{model_name}'"):
        metric = mv.tags.get("recur.metric", "")
        rows.append({
            "version": int(mv.version),
            "aliases": ",".join(sorted(aliases.get(str(mv.version), []))),
            "metric": metric,
            "score": mv.tags.get(f"recur.test_{metric}", ""),
            "baseline": mv.tags.get(f"recur.baseline_{metric}", ""),
            "decision": mv.tags.get("recur.decision", ""),
            "run_id": mv.run_id or mv.tags.get("recur.run_id", ""),
            "data_hash": mv.tags.get("recur.data_hash", "")[:12],
        })
    return sorted(rows, key=lambda r: -r["version"])
