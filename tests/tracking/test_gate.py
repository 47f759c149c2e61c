"""The registry gate's decision rule, for metrics where higher is better and where lower is, and
the picture of a decision (`plots/gate.png`): given the scores, when the gate decides, then the
picture draws those scores, the line the challenger had to pass, and the decision in its title.

The baseline rule on a real MLflow server: given versions whose models score known values and a
trivial baseline's score, when the gate runs, then a version not strictly better than the baseline
gets no alias (even with no champion) and tags that say why, and one better than it is promoted."""

import math
import uuid

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.tasks.classify import score_labels
from pipeline.tracking import plots, registry
from pipeline.tracking.registry import beats_baseline, decide
from pipeline.tracking.store import use_tracking_uri


def test_first_model_becomes_champion():
    assert decide(0.5, None, 0.0) == (True, "no current champion")


@pytest.mark.parametrize("candidate,champion,higher,promoted", [
    (0.91, 0.90, True, True),    # accuracy up
    (0.90, 0.91, True, False),   # accuracy down
    (0.80, 0.90, False, True),   # MASE down: better
    (0.95, 0.90, False, False),  # MASE up: worse
    (0.90, 0.90, False, False),  # a tie never replaces the champion
])
def test_direction_follows_the_metric(candidate, champion, higher, promoted):
    assert decide(candidate, champion, 0.0, higher_is_better=higher)[0] is promoted


def test_margin_must_exceed_min_improvement_in_the_better_direction():
    # binary fractions, so the margins are exact
    promoted, reason = decide(0.75, 1.0, 0.25, higher_is_better=False)
    assert not promoted and "+0.2500" in reason  # improved by exactly the margin: not more
    promoted, reason = decide(0.5, 1.0, 0.25, higher_is_better=False)
    assert promoted and "+0.5000" in reason


def test_a_candidate_scoring_nan_is_never_promoted():
    assert decide(math.nan, 0.9, 0.0)[0] is False


def test_labels_are_scored_by_name():
    truth = ["a", "a", "b", "b"]
    predicted = ["a", "a", "a", "b"]
    scores = score_labels(truth, predicted)
    assert scores["accuracy"] == pytest.approx(0.75)
    # a: tp 2, support 2, predicted 3 -> F1 = 4/5; b: tp 1, support 2, predicted 1 -> F1 = 2/3
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def _gate_figure(candidate, champion, margin, *, higher, version="2", champion_version="1"):
    promoted, reason = decide(candidate, champion, margin, higher_is_better=higher)
    fig = plots.gate_comparison(metric="accuracy" if higher else "perplexity", higher_is_better=higher,
                                candidate_version=version, candidate_score=candidate,
                                champion_version=champion_version if champion is not None else None,
                                champion_score=champion, min_improvement=margin, promoted=promoted,
                                reason=reason)
    return fig, promoted, reason


def test_gate_picture_kept_challenger_below_the_champion_plus_margin():
    fig, promoted, reason = _gate_figure(0.75, 0.625, 0.25, higher=True)  # exact binary fractions
    try:
        (ax,) = fig.axes
        assert not promoted
        assert [t.get_text() for t in ax.get_xticklabels()] == ["champion v1", "challenger v2"]
        assert [bar.get_height() for bar in ax.patches] == [0.625, 0.75]
        (line,) = ax.lines
        assert list(line.get_ydata()) == [0.875, 0.875]  # champion + margin
        assert "margin 0.25 = 0.8750" in line.get_label()
        assert ax.get_title() == f"version 2 kept as @challenger\n{reason}"
        assert [t.get_text() for t in ax.texts] == ["0.6250", "0.7500"]
        assert ax.get_ylabel() == "test accuracy (higher is better)"
        assert ax.get_ylim()[1] > 0.875  # the line is inside the picture
    finally:
        plots.close(fig)


def test_gate_picture_lower_is_better_promoted_below_the_champion_minus_margin():
    fig, promoted, _ = _gate_figure(2.5, 4.0, 0.5, higher=False)
    try:
        (ax,) = fig.axes
        assert promoted
        assert [bar.get_height() for bar in ax.patches] == [4.0, 2.5]
        (line,) = ax.lines
        assert list(line.get_ydata()) == [3.5, 3.5]  # champion - margin
        assert ax.get_title().startswith("version 2 promoted to @champion\nbeats the champion by +1.5000")
        assert ax.get_ylabel() == "test perplexity (lower is better)"
    finally:
        plots.close(fig)


def test_gate_picture_without_a_champion_shows_the_challenger_alone_and_says_so():
    fig, promoted, _ = _gate_figure(0.8, None, 0.1, higher=True, version="1")
    try:
        (ax,) = fig.axes
        assert promoted
        assert [t.get_text() for t in ax.get_xticklabels()] == ["challenger v1"]
        assert [bar.get_height() for bar in ax.patches] == [0.8]
        assert len(ax.lines) == 0  # no champion: no line to pass
        assert ax.get_title() == "no champion yet: version 1 promoted to @champion"
    finally:
        plots.close(fig)


def test_gate_picture_of_a_version_gated_again_is_the_champion_alone():
    fig = plots.gate_comparison(metric="accuracy", higher_is_better=True, candidate_version="3",
                                candidate_score=0.9, champion_version="3", champion_score=0.9,
                                min_improvement=0.0, promoted=True, reason="already @champion")
    try:
        (ax,) = fig.axes
        assert len(ax.patches) == 1 and len(ax.lines) == 0
        assert [t.get_text() for t in ax.get_xticklabels()] == ["champion v3"]
        assert ax.get_title() == "version 3 is already @champion"
    finally:
        plots.close(fig)


def test_gate_picture_of_a_rejected_version_draws_the_baseline_and_reference_bars():
    reason = beats_baseline(0.5, 0.75, metric="accuracy", baseline_name="majority-class")[1]
    fig = plots.gate_comparison(metric="accuracy", higher_is_better=True, candidate_version="1",
                                candidate_score=0.5, champion_version=None, champion_score=None,
                                min_improvement=0.0, promoted=False, reason=reason,
                                baseline_name="majority-class", baseline_score=0.75,
                                references={"nn1 euclidean\nreference": 0.875}, rejected=True)
    try:
        (ax,) = fig.axes
        assert [t.get_text() for t in ax.get_xticklabels()] == [
            "majority-class\nbaseline", "nn1 euclidean\nreference", "challenger v1"]
        assert [bar.get_height() for bar in ax.patches] == [0.75, 0.875, 0.5]
        assert ax.get_title() == ("version 1 NOT promoted: does not beat the majority-class baseline\n"
                                  "test accuracy 0.5000 does not beat the majority-class baseline 0.7500 "
                                  "(higher is better)")
    finally:
        plots.close(fig)


# ------------------------------------------------------------------------------ the baseline rule


@pytest.mark.parametrize("candidate,baseline,higher,beats", [
    (0.76, 0.75, True, True),
    (0.75, 0.75, True, False),   # a tie learned nothing
    (0.74, 0.75, True, False),
    (0.99, 1.0, False, True),    # MASE below the seasonal naive's 1.0
    (1.0, 1.0, False, False),
    (0.9999999795999819, 1.0, False, False),  # seasonal naive itself, through float32: a tie
    (0.999998, 1.0, False, True),
    (0.0, 0.0, False, False),    # naive exact (MASE's 0.0): nothing beats it
    (1e-9, 0.0, True, True),
    (math.nan, 0.5, True, False),
])
def test_the_baseline_must_be_beaten_strictly_in_the_better_direction(candidate, baseline, higher, beats):
    assert beats_baseline(candidate, baseline, higher)[0] is beats


class Constant(mlflow.pyfunc.PythonModel):
    """A model whose every prediction is its score, so that `score` reads it back."""

    def __init__(self, value: float) -> None:
        self.value = value

    def predict(self, context, model_input, params=None):
        return [self.value] * len(model_input)


def _new_version(uri: str, name: str, value: float) -> str:
    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Constant(value),
                                       pip_requirements=["mlflow"])  # not inferred: seconds a model
    return registry.register_version(info.model_uri, name, run_id=run.info.run_id)


def _gate(uri: str, name: str, version: str, *, baseline: float, metric: str = "accuracy",
          higher: bool = True) -> registry.Decision:
    return registry.gate(tracking_uri=uri, model_name=name, version=version, run_id="r", metric=metric,
                         higher_is_better=higher, min_improvement=0.0, inputs=pd.DataFrame({"x": [0, 1]}),
                         score=lambda outputs: {metric: float(outputs[0])}, data_hash="0" * 64,
                         baseline={metric: baseline, f"nn1_euclidean_{metric}": 0.9},
                         baseline_name="majority-class")


def test_gate_rejects_a_version_at_its_baseline_even_without_a_champion_then_promotes_a_better_one(
        mlflow_server):
    uri, name = mlflow_server, f"baseline-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(uri)
    with use_tracking_uri(uri):
        mlflow.set_experiment(name)
        # Given no champion and a version that scores exactly the baseline's 0.75
        first = _new_version(uri, name, 0.75)
        # when it is gated, then it is registered with no alias and tagged with the reason
        decision = _gate(uri, name, first, baseline=0.75)
        assert (decision.decision, decision.alias, decision.promoted) == ("rejected", None, False)
        assert decision.baseline_score == 0.75 and decision.champion_version is None
        assert decision.baselines == {"accuracy": 0.75, "nn1_euclidean_accuracy": 0.9}
        assert client.get_registered_model(name).aliases == {}
        tags = client.get_model_version(name, first).tags
        assert tags["recur.decision"] == "rejected"
        assert tags["recur.reason"] == ("test accuracy 0.7500 does not beat the majority-class baseline "
                                        "0.7500 (higher is better)")
        assert tags["recur.baseline_accuracy"] == "0.750000"
        assert tags["recur.baseline_nn1_euclidean_accuracy"] == "0.900000"
        assert tags["recur.baseline"] == "majority-class"

        # Given a version better than the baseline, then it becomes @champion (no champion yet)
        second = _new_version(uri, name, 0.8)
        decision = _gate(uri, name, second, baseline=0.75)
        assert (decision.decision, decision.alias, decision.promoted) == ("champion", "champion", True)
        assert decision.reason == "no current champion"
        assert client.get_model_version(name, second).tags["recur.baseline_accuracy"] == "0.750000"

        # Given a champion and a version below the baseline, then it is rejected and the champion stays
        third = _new_version(uri, name, 0.5)
        decision = _gate(uri, name, third, baseline=0.75)
        assert decision.decision == "rejected" and decision.alias is None
        assert (decision.champion_version, decision.champion_score) == (second, 0.8)
        assert client.get_registered_model(name).aliases == {"champion": second}

    rows = {r["version"]: r for r in registry.list_versions(uri, name)}
    assert [rows[int(v)]["decision"] for v in (first, second, third)] == ["rejected", "champion", "rejected"]
    assert rows[int(third)]["baseline"] == "0.750000" and rows[int(third)]["aliases"] == ""


def test_gate_lower_is_better_rejects_a_perplexity_above_the_unigram_baseline(mlflow_server):
    uri, name = mlflow_server, f"baseline-lm-{uuid.uuid4().hex[:8]}"
    with use_tracking_uri(uri):
        mlflow.set_experiment(name)
        worse, better = _new_version(uri, name, 12.0), _new_version(uri, name, 8.0)
        rejected = _gate(uri, name, worse, baseline=10.0, metric="perplexity", higher=False)
        promoted = _gate(uri, name, better, baseline=10.0, metric="perplexity", higher=False)
    assert rejected.decision == "rejected" and "(lower is better)" in rejected.reason
    assert promoted.decision == "champion"


def test_gate_names_the_gate_metric_missing_from_the_baseline(mlflow_server):
    with pytest.raises(ValueError, match="gate metric 'macro_f1'.*baseline gave \\['accuracy'\\]"):
        registry.gate(tracking_uri=mlflow_server, model_name="never", version="1", run_id="r",
                      metric="macro_f1", higher_is_better=True, min_improvement=0.0, inputs=None,
                      score=lambda outputs: {}, data_hash="0" * 64, baseline={"accuracy": 0.5},
                      baseline_name="majority-class")
