"""Two promotions race for @champion (a real MLflow registry on a sqlite store, two threads).

Given versions 1 and 2 of a model gated at the same time, when both have read "no champion"
before either sets an alias (the interleaving is forced), then the gate that sets second reads
@champion again right before setting it, compares against the version the other gate promoted,
and exactly one version ends as @champion: the better one, with the version it replaced
recorded; the other is @challenger or was replaced.
"""

from __future__ import annotations

import threading

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.tracking import registry
from pipeline.tracking.store import use_tracking_uri

NAME = "race"
SCORES = {"1": 0.80, "2": 0.90}  # version -> the accuracy its model scores


class Constant(mlflow.pyfunc.PythonModel):
    """A model whose every prediction is its score, so that `score` reads it back."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, context, model_input, params=None):
        return [self.value] * len(model_input)


@pytest.fixture
def two_versions(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with use_tracking_uri(uri):
        experiment = mlflow.create_experiment("race", artifact_location=(tmp_path / "artifacts").as_uri())
        for version, value in SCORES.items():
            with mlflow.start_run(experiment_id=experiment) as run:
                info = mlflow.pyfunc.log_model(name="model", python_model=Constant(value),
                                               pip_requirements=["mlflow"])  # not inferred: seconds a model
            assert registry.register_version(info.model_uri, NAME, run_id=run.info.run_id) == version
    return uri


@pytest.mark.parametrize("first", ["1", "2"])
def test_the_later_gate_compares_again_and_one_champion_remains(two_versions, monkeypatch, first):
    uri = two_versions
    both_read = threading.Barrier(2, timeout=60)
    first_set = threading.Event()
    reads: dict[str, int] = {}
    real_read, real_set = registry.current_champion, MlflowClient.set_registered_model_alias

    def current_champion(client, name):
        me = threading.current_thread().name
        reads[me] = reads.get(me, 0) + 1
        if reads[me] == 2 and me != first:
            assert first_set.wait(60)  # the second gate re-reads after the first has set its alias
        found = real_read(client, name)
        if reads[me] == 1:
            both_read.wait()  # both gates saw the same (no) champion
        return found

    def set_alias(self, name, alias, version):
        real_set(self, name, alias, version)
        if threading.current_thread().name == first:
            first_set.set()

    monkeypatch.setattr(registry, "current_champion", current_champion)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", set_alias)
    decisions, errors = {}, []

    def run_gate(version):
        try:
            with use_tracking_uri(uri):
                decisions[version] = registry.gate(
                    tracking_uri=uri, model_name=NAME, version=version, run_id="r", metric="accuracy",
                    higher_is_better=True, min_improvement=0.0, inputs=pd.DataFrame({"x": [0, 1]}),
                    score=lambda outputs: {"accuracy": float(outputs[0])}, data_hash="0" * 64,
                    baseline={"accuracy": 0.5}, baseline_name="majority-class")  # both beat it
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    order = [first, *(v for v in SCORES if v != first)]
    threads = [threading.Thread(target=run_gate, args=(v,), name=v) for v in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    second = decisions[next(v for v in SCORES if v != first)]
    assert second.champion_version == first  # it compared against the version set meanwhile
    if first == "1":
        assert second.promoted and client.get_model_version(NAME, "2").tags["recur.replaced_champion"] == "1"
    else:
        challenger = client.get_model_version_by_alias(NAME, "challenger")
        assert not second.promoted and str(challenger.version) == "1"
