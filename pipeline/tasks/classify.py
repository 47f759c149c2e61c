"""Sequence classification: cross-entropy, accuracy, macro-F1, confusion matrix.

Inputs are float sequences (time x channels), or token ids of texts (a dataset of feature kind
`token`, `--format text-classes`): the model then embeds them in front of the same encoder and
pooling, and the served model takes raw `text`, split with the dataset's own vocabulary and
tokenizer (`pipeline.data.tokens.tokenize`).
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.nn import functional as F

from pipeline.data.preprocess import arrow_steps, collate_inputs, pad_steps, pad_token_lists, python_steps
from pipeline.data.tokens import detokenize, encode, token_index, tokenize, truncate_tokens
from pipeline.task_metrics import TASK_METRICS
from pipeline.tasks.base import Batch, MetricState, Report, Task

log = logging.getLogger(__name__)

ATTENTION_EXAMPLES = 6  # test sequences drawn in the attention heatmap
PREDICT_BATCH = 256  # sequences per forward pass in predict


def random_crop(x_BTF: torch.Tensor, lengths_B: torch.Tensor, share: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row cut to a random window (window slicing): a length drawn uniformly between
    ceil(share * its length) and its length, at a uniformly drawn start within the row; the window
    moves to the front and the steps after it are zeros, as padding is. Returns (x_BTF, lengths_B),
    T unchanged, lengths on the CPU as given; draws from `generator` (the global one by default,
    seeded per worker like dropout)."""
    dtype, lengths_B = lengths_B.dtype, lengths_B.long()
    num_rows, steps = x_BTF.shape[:2]
    ratio_B = share + (1.0 - share) * torch.rand(num_rows, generator=generator)
    keep_B = torch.minimum((lengths_B * ratio_B).ceil().long().clamp(min=1), lengths_B.clamp(min=1))
    start_B = (torch.rand(num_rows, generator=generator) * (lengths_B - keep_B + 1)).long()
    t_T = torch.arange(steps)
    index_BT = (start_B[:, None] + t_T).clamp(max=steps - 1)
    valid_BT = t_T < keep_B[:, None]
    device = x_BTF.device
    index_BTF = index_BT.to(device)[:, :, None].expand(-1, -1, x_BTF.shape[2])
    cropped_BTF = torch.gather(x_BTF, 1, index_BTF) * valid_BT.to(device)[:, :, None].to(x_BTF.dtype)
    return cropped_BTF, keep_B.to(dtype)


class ClassifyTask(Task):
    name = "classify"
    # the names live in pipeline.task_metrics, which config validation reads without torch
    metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["classify"].metrics
    higher_is_better: ClassVar[dict[str, bool]] = TASK_METRICS["classify"].higher_is_better
    gate_metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["classify"].gate_metrics
    default_gate_metric = TASK_METRICS["classify"].default_gate_metric
    # probabilities: also return one `prob_<label>` column per class (batch inference asks for it).
    predict_params: ClassVar[dict[str, Any]] = {"probabilities": False}
    batch_predict_params: ClassVar[dict[str, Any]] = {"probabilities": True}

    def __init__(self, pre: Any, cfg: Any = None) -> None:
        super().__init__(pre, cfg)
        self.num_classes = len(pre.labels)
        # training loss only; metrics use plain cross-entropy
        self.label_smoothing = self.cfg.train.label_smoothing
        # text inputs: how the dataset split its texts, so `predict` splits raw text the same way
        self.tokens = pre.feature_kind == "token"
        params = pre.task_params or {}
        self.level = params.get("level", "word")
        self.lowercase = bool(params.get("lowercase", False))
        self.max_length = params.get("max_length")
        self.index = token_index(pre.vocab) if self.tokens else {}
        self.random_crop = self.cfg.train.random_crop  # "auto" until resolved: fine for evaluation
        if self.random_crop != "auto" and self.random_crop and self.tokens:
            raise ValueError(f"train.random_crop {self.random_crop} cuts float sequences to random "
                             f"windows; this dataset's inputs are tokens: set train.random_crop 0")

    def build_model(self) -> torch.nn.Module:
        from pipeline.models.classifier import SequenceClassifier, build_model

        if self.tokens:
            m = self.cfg.model
            return SequenceClassifier(input_size=1, num_classes=self.num_classes, **m.encoder_args(),
                                      pooling=m.pooling, attention=m.attention, **m.frontend_args(),
                                      instance_norm=m.instance_norm is True, vocab_size=len(self.pre.vocab),
                                      embedding_size=m.embedding_size)
        return build_model(self.cfg.model, input_size=self.pre.num_channels, num_classes=self.num_classes,
                           pre=self.pre)

    def word_embedding(self, model: torch.nn.Module) -> torch.nn.Embedding | None:
        return model.encoder.embedding if self.tokens else None

    def forward(self, model: torch.nn.Module, batch: Batch, *, train: bool) -> torch.Tensor:
        """Logits (B, K). Training with train.random_crop, each row is first cut to a random window
        of its own (`random_crop`); evaluation and prediction read whole rows."""
        if train and self.random_crop:
            if self.random_crop == "auto":
                raise ValueError("train.random_crop 'auto' must be resolved from the dataset before "
                                 "training (pipeline.training.budget.resolve)")
            return model(*random_crop(batch["x"], batch["lengths"], self.random_crop))
        return model(batch["x"], batch["lengths"])

    def collate(self, table: pa.Table) -> Batch:
        out = collate_inputs(table, self.pre)
        if "y" in table.column_names:
            out["y"] = torch.from_numpy(table.column("y").to_numpy().astype(np.int64))
        return out

    @property
    def loss_floor(self) -> float:
        """Label smoothing's floor: the entropy of the smoothed target (1 - s + s / K on the label,
        s / K on each other class), the cross-entropy of a model that predicts it exactly; 0 without."""
        s, k = self.label_smoothing, self.num_classes
        if s <= 0 or k < 2:
            return 0.0
        label, other = 1.0 - s + s / k, s / k
        return -(label * math.log(label) + (k - 1) * other * math.log(other))

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

    def at_chance(self, state: MetricState) -> str:
        """Val accuracy at or below the share of the most frequent class (what predicting that class
        for every row scores): the model has not learned to tell the classes apart."""
        confusion = state["confusion"].detach().cpu().numpy()
        total = int(confusion.sum())
        if total == 0:
            return ""
        majority = float(confusion.sum(axis=1).max()) / total
        accuracy = float(np.trace(confusion)) / total
        if accuracy > majority + 1e-9:
            return ""
        return (f"val accuracy {accuracy:.4f} is no better than always predicting the most frequent "
                f"class ({majority:.4f})")

    def report(self, model: torch.nn.Module, table: pa.Table, state: MetricState) -> Report:
        from pipeline.tasks.plots import attention_heatmap, confusion_matrix, f1_bars

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
            tokens = [[self.pre.vocab[i] for i in row] for row in examples.column("x").to_pylist()] \
                if self.tokens else None
            # with model.patch > 1 the weights are per patch of steps: ceil(length / patch) of them
            steps_B = model.encoder_lengths(batch["lengths"])
            for i, (row_id, length) in enumerate(zip(examples.column("id").to_pylist(), steps_B.tolist())):
                weights.append(weights_BT[i, :length].numpy())
                true, guess = labels[int(batch["y"][i])], labels[predicted[i]]
                titles.append(f"{row_id}: true {true}, predicted {guess}")
            out.figures["plots/attention.png"] = attention_heatmap(weights, titles, tokens=tokens)
        return out

    # Input: column `x`, each value a time x channels nested list (or a flat list for one
    # channel). Output: `label`, `label_index`, `confidence`; with the param `probabilities: true`
    # also `prob_<label>` for every label, in label order (they sum to 1).
    # A text classifier's input is column `text` instead, one raw string per row.
    def predict(self, model: torch.nn.Module, inputs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        sequences = self.encode_texts(inputs) if self.tokens else inputs["x"].tolist()
        probabilities = []
        with torch.no_grad():
            for start in range(0, len(sequences), PREDICT_BATCH):
                if self.tokens:
                    rows = sequences[start : start + PREDICT_BATCH]
                    lengths_B = np.array([len(r) for r in rows], dtype=np.int64)
                    ids_N = np.fromiter((i for r in rows for i in r), dtype=np.int64,
                                        count=int(lengths_B.sum()))
                    x_BTC, lengths_B = pad_token_lists(ids_N, lengths_B), torch.from_numpy(lengths_B)
                else:
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

    def encode_texts(self, inputs: pd.DataFrame) -> list[list[int]]:
        """Column `text` -> token ids per row, as the importer encoded them: stripped, lowercased
        if the dataset was, characters or words, unknown tokens <unk>, cut to the import's
        max_length. A row without tokens is an error naming it."""
        if "text" not in inputs.columns:
            raise ValueError(f"this text classifier's input needs a column `text` (one string per row); "
                             f"got columns {list(inputs.columns)}")
        out = []
        for row, text in enumerate(inputs["text"].tolist()):
            if not isinstance(text, str):
                raise ValueError(f"row {row}: text must be a string, got {type(text).__name__}")
            tokens = truncate_tokens(tokenize(text, self.level, self.lowercase), self.max_length)
            if not tokens:
                raise ValueError(f"row {row}: the text has no tokens (empty or only whitespace)")
            out.append(encode(tokens, self.index))
        return out

    def raw_inputs(self, table: pa.Table) -> pd.DataFrame:
        if not self.tokens:
            return super().raw_inputs(table)
        # <unk> is written as the literal "<unk>", which the tokenizer reads back as <unk>
        return pd.DataFrame({"text": [detokenize((self.pre.vocab[i] for i in row), self.level)
                                      for row in table.column("x").to_pylist()]})

    def gate_data(self, table: pa.Table) -> tuple[pd.DataFrame, Any]:
        labels = [self.pre.labels[i] for i in table.column("y").to_pylist()]
        if self.tokens:
            return self.raw_inputs(table), labels
        return pd.DataFrame({"x": table.column("x").to_pylist()}), labels

    def score(self, outputs: pd.DataFrame, truth: Any) -> dict[str, float]:
        return score_labels(truth, outputs["label"].tolist())

    def baseline_name(self) -> str:
        return "majority-class"

    def baseline(self, train: pa.Table, test: pa.Table) -> dict[str, float]:
        """The train split's majority class predicted for every test row: accuracy and macro_f1
        by `score_labels`, as the gate scores a model. Ties go to the class first in label order.

        Also a reference that is NOT a gate bar, `nn1_euclidean_accuracy`: the test accuracy of
        1-nearest-neighbour by Euclidean distance with train as the reference set, on the raw
        (not normalized) sequences, each resampled to one common length (`nn1_accuracy`).
        """
        y_train = train.column("y").to_numpy().astype(np.int64)
        if y_train.size == 0:
            raise ValueError("classify baseline: the train split has no rows to take the majority class from")
        majority = self.pre.labels[int(np.bincount(y_train, minlength=self.num_classes).argmax())]
        _, truth = self.gate_data(test)
        scores = score_labels(truth, [majority] * len(truth))
        if not self.tokens:  # distances between token ids mean nothing
            scores["nn1_euclidean_accuracy"] = nn1_accuracy(train, test)
        return scores


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


NN1_MAX_ROWS = 2000  # rows of each split 1-NN compares at most (2,000 x 2,000 distances)


def resample(sequences: list[np.ndarray], length: int) -> np.ndarray:
    """Sequences (T_i, C) -> float64 (B, length, C): every channel linearly interpolated at `length`
    evenly spaced points from its first step to its last. A sequence already `length` steps long
    is unchanged; a one-step sequence is repeated."""
    channels = sequences[0].shape[1] if sequences else 0
    out_BLC = np.empty((len(sequences), length, channels), dtype=np.float64)
    grid_L = np.linspace(0.0, 1.0, length)
    for i, seq_TC in enumerate(sequences):
        if len(seq_TC) == length:
            out_BLC[i] = seq_TC
            continue
        steps_T = np.linspace(0.0, 1.0, len(seq_TC))
        for c in range(channels):
            out_BLC[i, :, c] = np.interp(grid_L, steps_T, seq_TC[:, c])
    return out_BLC


def nn1_accuracy(train: pa.Table, test: pa.Table, *, max_rows: int = NN1_MAX_ROWS, seed: int = 0) -> float:
    """Test accuracy of 1-nearest-neighbour, Euclidean distance, train rows as the reference set.

    Sequences are the raw `x` values (time x channels). Rows of unequal length are resampled by
    linear interpolation to the longest length among the rows compared (equal-length data, like
    most of the UCR archive, is compared as is: the archive's published 1-NN ED baseline). A split
    with more than `max_rows` rows is subsampled to `max_rows` rows, uniformly without replacement
    (seeded, so the figure is reproducible), which keeps the cost at most max_rows^2 distances.
    Ties go to the train row first in split order.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for name, table in (("train", train), ("test", test)):
        if table.num_rows == 0:
            raise ValueError(f"1-NN reference: the {name} split has no rows")
        if table.num_rows > max_rows:
            rows = np.sort(rng.choice(table.num_rows, max_rows, replace=False))
            log.info("1-NN reference: %d of the %s split's %d rows, drawn at random (seed %d)",
                     max_rows, name, table.num_rows, seed)
            table = table.take(pa.array(rows))
        steps_NC, lengths_B = arrow_steps(table.column("x"))
        sequences = np.split(steps_NC.astype(np.float64), np.cumsum(lengths_B)[:-1])
        picked.append((sequences, table.column("y").to_numpy().astype(np.int64)))
    (train_seqs, y_train), (test_seqs, y_test) = picked
    length = max(len(s) for s in (*train_seqs, *test_seqs))
    train_BD = resample(train_seqs, length).reshape(len(train_seqs), -1)
    test_BD = resample(test_seqs, length).reshape(len(test_seqs), -1)
    # squared distances |a|^2 + |b|^2 - 2ab: one matrix product instead of a (test, train, D) array
    distances = ((test_BD**2).sum(axis=1)[:, None] + (train_BD**2).sum(axis=1)[None, :]
                 - 2.0 * test_BD @ train_BD.T)
    nearest = distances.argmin(axis=1)
    return float((y_train[nearest] == y_test).mean())
