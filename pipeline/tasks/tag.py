"""Sequence tagging (named entities, chunks): one label per word.

Loss: cross-entropy over valid words only (pad steps carry the target IGNORE and never count).
Metrics: token accuracy, and entity-level precision/recall/F1 computed by seqeval in its default
(conlleval-compatible) mode, which reads IOB1, IOB2 and IOBES tags: an entity counts as correct
only when its type and both boundaries match.

Shape suffixes: B batch, T words (padded), W characters per word (padded), K tags.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.nn import functional as F

from pipeline.data.dataset import UNK_ID
from pipeline.data.preprocess import arrow_lists, collate_inputs, pad_token_lists
from pipeline.task_metrics import TASK_METRICS
from pipeline.tasks.base import Batch, MetricState, Report, Task

IGNORE = -100  # target of pad steps: cross_entropy's ignore_index
MAX_WORD_CHARS = 24  # characters per word the char encoder reads (longer words: the first 24)
EXAMPLES = 8  # test sentences written to eval/tagged_examples.txt
PREDICT_BATCH = 256  # sentences per forward pass in predict


class TagTask(Task):
    name = "tag"
    # the names live in pipeline.task_metrics, which config validation reads without torch
    metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["tag"].metrics
    higher_is_better: ClassVar[dict[str, bool]] = TASK_METRICS["tag"].higher_is_better
    gate_metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["tag"].gate_metrics
    default_gate_metric = TASK_METRICS["tag"].default_gate_metric

    def __init__(self, pre: Any, cfg: Any = None) -> None:
        super().__init__(pre, cfg)
        self.num_tags = len(pre.labels)
        self.char_vocab: list[str] = list(pre.task_params.get("char_vocab", []))
        self.lowercase = bool(pre.task_params.get("lowercase", False))
        self.word_index = {t: i for i, t in enumerate(pre.vocab)}
        self.char_index = {c: i for i, c in enumerate(self.char_vocab)}
        # Training and evaluation read `chars` only when the run asks for char features; the
        # served model (no run config) decides from its own architecture in `predict`.
        self.use_chars = bool(self.cfg.model.char_features)

    # ------------------------------------------------------------------ model
    def build_model(self) -> torch.nn.Module:
        from pipeline.models.tagger import SequenceTagger

        model = self.cfg.model
        if model.char_features and not self.char_vocab:
            raise ValueError("model.char_features is true, but the dataset has no character "
                             "vocabulary (task_params.char_vocab); re-import it with --format conll")
        return SequenceTagger(vocab_size=len(self.pre.vocab), num_tags=self.num_tags,
                              embedding_size=model.embedding_size, **model.encoder_args(),
                              char_vocab_size=len(self.char_vocab) if model.char_features else 0,
                              char_embedding_size=model.char_embedding_size)

    def word_embedding(self, model: torch.nn.Module) -> torch.nn.Embedding | None:
        return model.embedding

    # ------------------------------------------------------------------ data
    def collate(self, table: pa.Table) -> Batch:
        out = collate_inputs(table, self.pre)
        lengths_B = out["lengths"].numpy()
        if "y" in table.column_names:
            tags_N, tag_lengths_B = arrow_lists(table.column("y"))
            if not np.array_equal(tag_lengths_B, lengths_B):
                raise ValueError("every sentence needs one tag per word; validate the dataset")
            out["y"] = pad_token_lists(tags_N, lengths_B, pad=IGNORE)
        if self.use_chars:
            if "chars" not in table.column_names:
                raise ValueError("model.char_features is true, but the dataset has no `chars` column")
            words = table.column("chars").combine_chunks().flatten()  # one list of char ids per word
            if len(words) != int(lengths_B.sum()):
                raise ValueError(f"`chars` holds {len(words)} words for {int(lengths_B.sum())} tokens; "
                                 "expected one list of character ids per token (re-import the data)")
            char_lengths_N = pc.list_value_length(words).to_numpy(zero_copy_only=False)
            out["chars"] = pad_chars(words.flatten().to_numpy(zero_copy_only=False), char_lengths_N,
                                     lengths_B)
        return out

    def loss_weight(self, batch: Batch) -> int:
        """Valid words in the batch: the loss is a mean per word."""
        return int((batch["y"] != IGNORE).sum())

    # ------------------------------------------------------------------ loop
    def forward(self, model: torch.nn.Module, batch: Batch, *, train: bool) -> torch.Tensor:
        return model(batch["x"], batch["lengths"], batch.get("chars"))

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy per valid word (nats); pad steps are ignored."""
        return F.cross_entropy(outputs.float().flatten(0, 1), batch["y"].flatten(), ignore_index=IGNORE)

    def new_state(self, device: torch.device | str = "cpu") -> MetricState:
        return {
            "loss_sum": torch.zeros((), dtype=torch.float64, device=device),  # nats
            "tokens": torch.zeros((), dtype=torch.int64, device=device),  # valid words
            "correct": torch.zeros((), dtype=torch.int64, device=device),
            # Tag names per sentence, in batch order (validation runs whole on every rank).
            "true": [],
            "predicted": [],
        }

    def update(self, state: MetricState, outputs: torch.Tensor, batch: Batch) -> None:
        logits_BTK, y_BT = outputs.float(), batch["y"]
        valid_BT = y_BT != IGNORE
        state["loss_sum"] += F.cross_entropy(logits_BTK.flatten(0, 1), y_BT.flatten(),
                                             ignore_index=IGNORE, reduction="sum").detach().double()
        predicted_BT = logits_BTK.argmax(dim=-1)
        state["tokens"] += valid_BT.sum()
        state["correct"] += ((predicted_BT == y_BT) & valid_BT).sum()
        labels = self.pre.labels
        for true, guess, n in zip(y_BT.tolist(), predicted_BT.tolist(), batch["lengths"].tolist()):
            state["true"].append([labels[i] for i in true[:n]])
            state["predicted"].append([labels[i] for i in guess[:n]])

    def compute(self, state: MetricState) -> dict[str, float]:
        tokens = max(int(state["tokens"]), 1)
        return {"loss": float(state["loss_sum"]) / tokens,
                "token_accuracy": int(state["correct"]) / tokens,
                **entity_scores(state["true"], state["predicted"])}

    # ------------------------------------------------------------------ after training
    def report(self, model: torch.nn.Module, table: pa.Table, state: MetricState) -> Report:
        from pipeline.tasks.plots import entity_f1_bars

        per_entity = entity_report(state["true"], state["predicted"])
        out = Report(dicts={"eval/entity_report.json": per_entity})
        types = {k: v for k, v in per_entity.items() if not k.endswith(" avg")}
        if types:
            out.figures["plots/entity_f1.png"] = entity_f1_bars(types)
        examples = table.slice(0, EXAMPLES)
        lines = []
        for row_id, tokens, true, guess in zip(examples.column("id").to_pylist(), self.raw_tokens(examples),
                                               state["true"], state["predicted"]):
            lines.append(f"# {row_id}")
            width = max(len(t) for t in [*tokens, "token"])
            tag_width = max(len(t) for t in [*true, "true"])
            lines.append(f"{'token':<{width}}  {'true':<{tag_width}}  predicted")
            lines += [f"{t:<{width}}  {a:<{tag_width}}  {b}{'' if a == b else '   <- wrong'}"
                      for t, a, b in zip(tokens, true, guess)]
            lines.append("")
        out.texts["eval/tagged_examples.txt"] = "\n".join(lines)
        return out

    # ------------------------------------------------------------------ serving and gate
    # Input: column `tokens`, each value a sentence as a list of token strings (a string is
    # split on whitespace). Output: column `tags`, a list of tag names of the same length.
    def predict(self, model: torch.nn.Module, inputs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        if "tokens" not in inputs.columns:
            raise ValueError(f"the tagger's input needs a column `tokens` (a list of token strings per "
                             f"sentence); got columns {list(inputs.columns)}")
        sentences = [_as_tokens(value, i) for i, value in enumerate(inputs["tokens"].tolist())]
        uses_chars = bool(getattr(model, "uses_chars", False))
        tags: list[list[str]] = [[] for _ in sentences]
        todo = [i for i, s in enumerate(sentences) if s]  # an empty sentence has no tags
        model.eval()
        with torch.no_grad():
            for start in range(0, len(todo), PREDICT_BATCH):
                rows = todo[start : start + PREDICT_BATCH]
                batch = self.encode([sentences[i] for i in rows], chars=uses_chars)
                predicted_BT = model(batch["x"], batch["lengths"], batch.get("chars")).argmax(dim=-1)
                for i, guess, n in zip(rows, predicted_BT.tolist(), batch["lengths"].tolist()):
                    tags[i] = [self.pre.labels[k] for k in guess[:n]]
        return pd.DataFrame({"tags": tags})

    def encode(self, sentences: Sequence[Sequence[str]], *, chars: bool) -> Batch:
        """Raw token lists (each non-empty) -> {"x", "lengths"(, "chars")}, as the importer
        would have encoded them: lowercased words if the dataset was, unknown words <unk>."""
        lengths_B = np.array([len(s) for s in sentences], dtype=np.int64)
        fold = str.lower if self.lowercase else str
        ids_N = np.array([self.word_index.get(fold(t), UNK_ID) for s in sentences for t in s], dtype=np.int64)
        out = {"x": pad_token_lists(ids_N, lengths_B), "lengths": torch.from_numpy(lengths_B)}
        if chars:
            words = [t for s in sentences for t in s]
            char_ids = np.array([self.char_index.get(c, UNK_ID) for t in words for c in t], dtype=np.int64)
            out["chars"] = pad_chars(char_ids, np.array([len(t) for t in words], dtype=np.int64), lengths_B)
        return out

    def raw_tokens(self, table: pa.Table) -> list[list[str]]:
        """The test sentences as token strings, for `predict`: the original tokens recovered from
        their character ids (the `chars` column keeps case and rare words); a token with a
        character outside the character vocabulary falls back to its vocabulary entry."""
        words = [[self.pre.vocab[i] for i in row] for row in table.column("x").to_pylist()]
        if "chars" not in table.column_names or not self.char_vocab:
            return words
        out = []
        for row_words, row_chars in zip(words, table.column("chars").to_pylist()):
            out.append([word if UNK_ID in ids or not ids else "".join(self.char_vocab[c] for c in ids)
                        for word, ids in zip(row_words, row_chars)])
        return out

    def raw_inputs(self, table: pa.Table) -> pd.DataFrame:
        return pd.DataFrame({"tokens": self.raw_tokens(table)})

    def gate_data(self, table: pa.Table) -> tuple[pd.DataFrame, Any]:
        truth = [[self.pre.labels[i] for i in row] for row in table.column("y").to_pylist()]
        return pd.DataFrame({"tokens": self.raw_tokens(table)}), truth

    def score(self, outputs: pd.DataFrame, truth: Any) -> dict[str, float]:
        return tag_scores(truth, [list(t) for t in outputs["tags"].tolist()])

    def baseline_name(self) -> str:
        return "most-frequent-tag-per-word"

    def baseline(self, train: pa.Table, test: pa.Table) -> dict[str, float]:
        """Each test word gets the tag it carries most often in train; a word never seen in train
        (or seen only as <unk>) gets the most frequent tag overall. Ties go to the tag first in
        the tag map. Words are read as the model reads them: the gate's raw test tokens encoded
        by `encode` (lowercased when the dataset is). Scored by `score` on the test split."""
        words_N, _ = arrow_lists(train.column("x"))
        tags_N, _ = arrow_lists(train.column("y"))
        if len(tags_N) == 0:
            raise ValueError("tag baseline: the train split has no tagged words to count")
        words_N, tags_N = words_N.astype(np.int64), tags_N.astype(np.int64)
        overall = int(np.bincount(tags_N, minlength=self.num_tags).argmax())
        # (word, tag) pair counts; per word the most frequent tag, ties to the lower tag id
        pairs, counts = np.unique(words_N * self.num_tags + tags_N, return_counts=True)
        word_P, tag_P = pairs // self.num_tags, pairs % self.num_tags
        order = np.lexsort((tag_P, -counts, word_P))
        words, first = np.unique(word_P[order], return_index=True)
        best_V = np.full(max(len(self.pre.vocab), int(words_N.max()) + 1), overall, dtype=np.int64)
        best_V[words] = tag_P[order][first]
        best_V[UNK_ID] = overall  # <unk> stands for many rare words, none of them known
        inputs, truth = self.gate_data(test)
        fold = str.lower if self.lowercase else str
        predicted = [[self.pre.labels[best_V[self.word_index.get(fold(t), UNK_ID)]] for t in sentence]
                     for sentence in inputs["tokens"].tolist()]
        return self.score(pd.DataFrame({"tags": predicted}), truth)


def _as_tokens(value: Any, row: int) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if value is None:
        raise ValueError(f"tokens of row {row} is missing; expected a list of token strings")
    return [str(t) for t in value]


def pad_chars(char_ids: np.ndarray, word_lengths_N: np.ndarray, lengths_B: np.ndarray) -> torch.Tensor:
    """Character ids of every word -> chars_BTW int64, 0-padded, words cut at MAX_WORD_CHARS.

    Args:
        char_ids: every character id of every word, word after word, sentence after sentence.
        word_lengths_N: characters per word (N words in all; sums to len(char_ids)).
        lengths_B: words per sentence (sums to N).
    """
    word_lengths_N = np.asarray(word_lengths_N, dtype=np.int64)
    lengths_B = np.asarray(lengths_B, dtype=np.int64)
    width = int(min(max(int(word_lengths_N.max()) if word_lengths_N.size else 1, 1), MAX_WORD_CHARS))
    batch, steps = len(lengths_B), int(lengths_B.max()) if lengths_B.size else 0
    chars_NW = np.zeros((len(word_lengths_N), width), dtype=np.int64)
    word_starts = np.concatenate([[0], np.cumsum(word_lengths_N)[:-1]]).astype(np.int64)
    word_of = np.repeat(np.arange(len(word_lengths_N)), word_lengths_N)
    position = np.arange(len(word_of)) - np.repeat(word_starts, word_lengths_N)
    keep = position < width
    chars_NW[word_of[keep], position[keep]] = np.asarray(char_ids, dtype=np.int64)[keep]
    chars_BTW = np.zeros((batch, steps, width), dtype=np.int64)
    sentence_starts = np.concatenate([[0], np.cumsum(lengths_B)[:-1]]).astype(np.int64)
    row_N = np.repeat(np.arange(batch), lengths_B)
    time_N = np.arange(int(lengths_B.sum())) - np.repeat(sentence_starts, lengths_B)
    chars_BTW[row_N, time_N] = chars_NW
    return torch.from_numpy(chars_BTW)


def entity_scores(true: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 (seqeval, conlleval-compatible mode).

    An entity is correct when its type, start and end all match. No true and no predicted
    entities give 0 (not a warning).
    """
    from seqeval.metrics import f1_score, precision_score, recall_score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns about non-IOB tags it reads leniently
        return {"precision": float(precision_score(true, predicted, zero_division=0)),
                "recall": float(recall_score(true, predicted, zero_division=0)),
                "f1": float(f1_score(true, predicted, zero_division=0))}


def tag_scores(true: list[list[str]], predicted: list[list[str]]) -> dict[str, float]:
    """Token accuracy and entity precision/recall/F1 over tag NAMES (so models with different
    tag maps compare fairly). Sentences must pair up with the same lengths."""
    if len(true) != len(predicted):
        raise ValueError(f"{len(true)} true sentences but {len(predicted)} predicted")
    bad = [i for i, (a, b) in enumerate(zip(true, predicted)) if len(a) != len(b)]
    if bad:
        raise ValueError(f"sentence {bad[0]}: {len(true[bad[0]])} true tags but "
                         f"{len(predicted[bad[0]])} predicted ({len(bad)} sentences differ)")
    tokens = sum(len(a) for a in true)
    correct = sum(x == y for a, b in zip(true, predicted) for x, y in zip(a, b))
    return {"token_accuracy": correct / tokens if tokens else 0.0, **entity_scores(true, predicted)}


def entity_report(true: list[list[str]], predicted: list[list[str]]) -> dict[str, dict[str, float]]:
    """Per entity type (and micro/macro/weighted averages): precision, recall, f1, support,
    as plain floats (seqeval's classification_report)."""
    from seqeval.metrics import classification_report

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = classification_report(true, predicted, output_dict=True, zero_division=0)
    return {name: {("f1" if k == "f1-score" else k): int(v) if k == "support" else float(v)
                   for k, v in row.items()}
            for name, row in report.items()}
