"""Sequence classification: cross-entropy, accuracy, macro-F1, confusion matrix."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.nn import functional as F

from pipeline.data.preprocess import collate_inputs, pad_steps, python_steps
from pipeline.tasks.base import Batch, MetricState, Report, Task

ATTENTION_EXAMPLES = 6  # test sequences drawn in the attention heatmap
PREDICT_BATCH = 256  # sequences per forward pass in predict


class ClassifyTask(Task):
    name = "classify"
    metrics: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "macro_f1")
    higher_is_better: ClassVar[dict[str, bool]] = {"loss": False, "accuracy": True, "macro_f1": True}
    gate_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1")
    default_gate_metric = "accuracy"
    # probabilities: also return one `prob_<label>` column per class (batch inference asks for it).
    predict_params: ClassVar[dict[str, Any]] = {"probabilities": False}
    batch_predict_params: ClassVar[dict[str, Any]] = {"probabilities": True}

    def __init__(self, pre: Any, cfg: Any = None) -> None:
        super().__init__(pre, cfg)
        self.num_classes = len(pre.labels)
        # training loss only; metrics use plain cross-entropy
        self.label_smoothing = self.cfg.train.label_smoothing

    def build_model(self) -> torch.nn.Module:
        from pipeline.models.classifier import SequenceClassifier

        return SequenceClassifier(input_size=self.pre.num_channels, num_classes=self.num_classes,
                                  **self.cfg.model.encoder_args(), pooling=self.cfg.model.pooling,
                                  attention=self.cfg.model.attention)

    def collate(self, table: pa.Table) -> Batch:
        out = collate_inputs(table, self.pre)
        if "y" in table.column_names:
            out["y"] = torch.from_numpy(table.column("y").to_numpy().astype(np.int64))
        return out

    def loss(self, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the batch (nats per sequence)."""
        return F.cross_entropy(outputs.float(), batch["y"], label_smoothing=self.label_smoothing)

    def new_state(self, device: torch.device | str = "cpu") -> MetricState:
        k = self.num_classes
        return {
            "loss_sum": torch.zeros((), dtype=torch.float64, device=device),  # nats
            "count": torch.zeros((), dtype=torch.int64, device=device),  # sequences
            "confusion": torch.zeros((k, k), dtype=torch.int64, device=device),  # [true, predicted]
        }

    def update(self, state: MetricState, outputs: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        logits_BK, y_B = outputs.float(), batch["y"]
        state["loss_sum"] += F.cross_entropy(logits_BK, y_B, reduction="sum").detach().double()
        state["count"] += y_B.numel()
        k = self.num_classes
        flat = (y_B * k + logits_BK.argmax(dim=-1)).bincount(minlength=k * k)
        state["confusion"] += flat.view(k, k)

    def compute(self, state: MetricState) -> dict[str, float]:
        confusion = state["confusion"].detach().cpu().numpy()
        return {"loss": float(state["loss_sum"]) / max(int(state["count"]), 1),
                **classification_scores(confusion)}

    def report(self, model: torch.nn.Module, table: pa.Table, state: MetricState) -> Report:
        from pipeline.tracking.plots import attention_heatmap, confusion_matrix, f1_bars

        confusion = state["confusion"].cpu().numpy()
        labels = self.pre.labels
        f1_K, support_K = per_class_f1(confusion)
        macro = classification_scores(confusion)["macro_f1"]
        out = Report(figures={"plots/confusion_matrix.png": confusion_matrix(confusion, labels),
                              "plots/per_class_f1.png": f1_bars(
                                  labels, f1_K, support_K,
                                  title=f"test F1 per class (macro F1 {macro:.3f})")},
                     dicts={"eval/confusion_matrix.json": {"labels": labels,
                                                           "confusion": confusion.tolist()}})
        if getattr(model, "pooling", None) == "attention":
            examples = table.slice(0, ATTENTION_EXAMPLES)
            batch = self.collate(examples)
            with torch.no_grad():
                logits_BK, weights_BT = model(batch["x"], batch["lengths"], return_attention=True)
            predicted = logits_BK.argmax(dim=-1).tolist()
            weights, titles = [], []
            for i, (row_id, length) in enumerate(zip(examples.column("id").to_pylist(),
                                                     batch["lengths"].tolist())):
                weights.append(weights_BT[i, :length].numpy())
                true, guess = labels[int(batch["y"][i])], labels[predicted[i]]
                titles.append(f"{row_id}: true {true}, predicted {guess}")
            out.figures["plots/attention.png"] = attention_heatmap(weights, titles)
        return out

    # Input: column `x`, each value a time x channels nested list (or a flat list for one
    # channel). Output: `label`, `label_index`, `confidence`; with the param `probabilities: true`
    # also `prob_<label>` for every label, in label order (they sum to 1).
    def predict(self, model: torch.nn.Module, inputs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        sequences = inputs["x"].tolist()
        probabilities = []
        with torch.no_grad():
            for start in range(0, len(sequences), PREDICT_BATCH):
                steps_NC, lengths_B = python_steps(sequences[start : start + PREDICT_BATCH])
                x_BTC, lengths_B = pad_steps(steps_NC, lengths_B, self.pre)
                probabilities.append(torch.softmax(model(x_BTC, lengths_B), dim=-1).numpy())
        probs = np.concatenate(probabilities) if probabilities else np.zeros((0, self.num_classes))
        index = probs.argmax(axis=1)
        out = pd.DataFrame({
            "label": [self.pre.labels[i] for i in index],
            "label_index": index.astype(np.int64),
            "confidence": probs.max(axis=1) if len(probs) else np.zeros(0),
        })
        if (params or {}).get("probabilities"):
            for k, label in enumerate(self.pre.labels):
                out[f"prob_{label}"] = probs[:, k]
        return out

    def gate_data(self, table: pa.Table) -> tuple[pd.DataFrame, Any]:
        labels = [self.pre.labels[i] for i in table.column("y").to_pylist()]
        return pd.DataFrame({"x": table.column("x").to_pylist()}), labels

    def score(self, outputs: pd.DataFrame, truth: Any) -> dict[str, float]:
        return score_labels(truth, outputs["label"].tolist())


def score_labels(true_labels: list[str], predicted: list[str]) -> dict[str, float]:
    """Accuracy and macro-F1 over label NAMES, so models with different label maps compare fairly."""
    names = sorted(set(true_labels) | set(predicted))
    index = {name: i for i, name in enumerate(names)}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, ([index[t] for t in true_labels], [index[p] for p in predicted]), 1)
    return classification_scores(confusion)


def per_class_f1(confusion_KK: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 of each class and its support (test rows of that class) from a confusion matrix
    [true, predicted]: f1_K (NaN for a class neither true nor predicted) and support_K."""
    confusion_KK = confusion_KK.astype(np.float64)
    support = confusion_KK.sum(axis=1)
    seen = support + confusion_KK.sum(axis=0)  # true + predicted
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(seen > 0, 2 * np.diag(confusion_KK) / seen, np.nan)
    return f1, support.astype(np.int64)


def classification_scores(confusion_KK: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 from a confusion matrix [true, predicted].

    Classes absent from both truth and predictions are left out of the macro mean, as
    scikit-learn's f1_score(average="macro") does over the labels it sees.
    """
    total = confusion_KK.sum()
    f1, _ = per_class_f1(confusion_KK)
    present = ~np.isnan(f1)
    return {
        "accuracy": float(np.trace(confusion_KK) / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
    }
