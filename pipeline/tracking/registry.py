"""Model registry: register every trained model, promote through one gate.

A new version becomes `@champion` only if it beats the current champion on the SAME test data
(this run's test split, both models loaded from the registry and scored by the same code) by more
than `registry.min_improvement`; otherwise it becomes `@challenger`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.tasks import classification_scores

CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass
class Decision:
    model_name: str
    version: str
    alias: str  # champion | challenger
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_labels(true_labels: Sequence[str], predicted: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over label NAMES, so models with different label maps compare fairly."""
    names = sorted(set(true_labels) | set(predicted))
    index = {name: i for i, name in enumerate(names)}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, ([index[t] for t in true_labels], [index[p] for p in predicted]), 1)
    return classification_scores(confusion)


def score_model(model_uri: str, sequences: list[Any], true_labels: Sequence[str], metric: str) -> float:
    import pandas as pd

    model = mlflow.pyfunc.load_model(model_uri)
    predicted = model.predict(pd.DataFrame({"x": sequences}))["label"].tolist()
    return score_labels(true_labels, predicted)[metric]


def current_champion(client: MlflowClient, name: str):
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def decide(candidate: float, champion: float | None, min_improvement: float) -> tuple[bool, str]:
    """Higher is better for every gate metric (accuracy, macro_f1)."""
    if champion is None:
        return True, "no current champion"
    margin = candidate - champion
    if margin > min_improvement:
        return True, f"beats the champion by {margin:+.4f} (> required {min_improvement:.4f})"
    return False, f"does not beat the champion by more than {min_improvement:.4f} (margin {margin:+.4f})"


def register_and_gate(*, tracking_uri: str, model_name: str, model_uri: str, run_id: str,
                      metric: str, min_improvement: float, sequences: list[Any],
                      true_labels: Sequence[str], data_hash: str) -> Decision:
    """Register `model_uri` as a new version, score it and the champion on the same data, set an alias.

    Call inside `store.use_tracking_uri(tracking_uri)`: registering and loading use the fluent API.
    """
    client = MlflowClient(tracking_uri)
    version = mlflow.register_model(model_uri, model_name, tags={"recur.run_id": run_id}).version
    candidate_score = score_model(f"models:/{model_name}/{version}", sequences, true_labels, metric)

    champion = current_champion(client, model_name)
    champion_score = None
    if champion is not None:
        champion_score = score_model(f"models:/{model_name}@{CHAMPION}", sequences, true_labels, metric)
    promoted, reason = decide(candidate_score, champion_score, min_improvement)
    alias = CHAMPION if promoted else CHALLENGER
    client.set_registered_model_alias(model_name, alias, version)

    decision = Decision(
        model_name=model_name, version=str(version), alias=alias, promoted=promoted, metric=metric,
        candidate_score=candidate_score, champion_version=champion.version if champion else None,
        champion_score=champion_score, min_improvement=min_improvement, reason=reason,
        run_id=run_id, data_hash=data_hash,
        decided_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    tags = {
        "recur.data_hash": data_hash,
        "recur.metric": metric,
        f"recur.test_{metric}": f"{candidate_score:.6f}",
        "recur.decision": alias,
        "recur.reason": reason,
    }
    if promoted and champion is not None:
        tags["recur.replaced_champion"] = str(champion.version)
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, value)
    return decision


def promote(tracking_uri: str, model_name: str, version: str) -> str | None:
    """Set `@champion` by hand (rollback); returns the version it replaced."""
    client = MlflowClient(tracking_uri)
    client.get_model_version(model_name, str(version))  # fails clearly if it does not exist
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
    registered = client.get_registered_model(model_name)
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
            "decision": mv.tags.get("recur.decision", ""),
            "run_id": mv.run_id or mv.tags.get("recur.run_id", ""),
            "data_hash": mv.tags.get("recur.data_hash", "")[:12],
        })
    return sorted(rows, key=lambda r: -r["version"])
