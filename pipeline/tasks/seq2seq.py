"""Sequence to sequence: token cross-entropy with teacher forcing; decoded outputs scored with
exact match, BLEU and chrF (sacrebleu), plus teacher-forced token accuracy.

Batches: `x` source ids (B, S) and `lengths`; `y_in` = <bos> + target (B, T), padded with 0;
`y_out` = target + <eos> (B, T), padded with -100 so the loss skips it; `target_lengths`.
Evaluation (val every epoch, test after training) scores the teacher-forced logits for loss and
token accuracy AND decodes every source (greedy, or beam search with `model.beam_size`) for
exact match, BLEU and chrF. BLEU and chrF are corpus-level, on sacrebleu's 0-100 scale; BLEU is
tokenized per character for character-level data and with sacrebleu's default 13a otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.nn import functional as F

from pipeline.data.dataset import BOS_ID, EOS_ID, PAD_ID
from pipeline.data.preprocess import arrow_lists, collate_inputs, pad_token_lists
from pipeline.data.tokens import detokenize, encode, tokenize
from pipeline.task_metrics import TASK_METRICS
from pipeline.tasks.base import Batch, MetricState, Report, Task

IGNORE = -100  # y_out padding: F.cross_entropy's ignore_index
EXAMPLES = 20  # test rows written to eval/translations.txt
ATTENTION_EXAMPLES = 4  # test rows drawn in plots/attention.png
PREDICT_BATCH = 256  # sources per decoding batch in predict


class Seq2SeqTask(Task):
    name = "seq2seq"
    # the names live in pipeline.task_metrics, which config validation reads without torch
    metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["seq2seq"].metrics
    higher_is_better: ClassVar[dict[str, bool]] = TASK_METRICS["seq2seq"].higher_is_better
    gate_metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["seq2seq"].gate_metrics
    default_gate_metric = TASK_METRICS["seq2seq"].default_gate_metric
    # 0 = the trained model's own setting (model.beam_size, model.max_decode_length).
    predict_params: ClassVar[dict[str, Any]] = {"beam_size": 0, "max_length": 0}

    def __init__(self, pre: Any, cfg: Any = None) -> None:
        super().__init__(pre, cfg)
        self.level = pre.task_params.get("level", "char")
        self.lowercase = bool(pre.task_params.get("lowercase", False))
        self.source_index = {token: i for i, token in enumerate(pre.vocab)}

    # ------------------------------------------------------------------ model and data
    def build_model(self) -> torch.nn.Module:
        from pipeline.models.seq2seq import Seq2Seq

        m = self.cfg.model
        return Seq2Seq(vocab_size=len(self.pre.vocab), target_vocab_size=len(self.pre.target_vocab),
                       **m.encoder_args(), embedding_size=m.embedding_size, attention=m.attention,
                       beam_size=m.beam_size, max_decode_length=m.max_decode_length)

    def collate(self, table: pa.Table) -> Batch:
        out = collate_inputs(table, self.pre)
        if "y" in table.column_names:
            ids_N, lengths_B = arrow_lists(table.column("y"))
            if lengths_B.size and lengths_B.min() < 1:
                raise ValueError("every target needs at least one token; got an empty target")
            starts_B = np.concatenate([[0], np.cumsum(lengths_B)[:-1]]).astype(np.int64)
            # y_in: <bos> before each target; y_out: <eos> after it. Both are target + 1 long.
            y_in_N = np.insert(ids_N.astype(np.int64), starts_B, BOS_ID)
            y_out_N = np.insert(ids_N.astype(np.int64), starts_B + lengths_B, EOS_ID)
            out["y_in"] = pad_token_lists(y_in_N, lengths_B + 1, pad=PAD_ID)
            out["y_out"] = pad_token_lists(y_out_N, lengths_B + 1, pad=IGNORE)
            out["target_lengths"] = torch.from_numpy(lengths_B + 1)
        return out

    def loss_weight(self, batch: Batch) -> int:
        """Target tokens (with <eos>): the loss is a mean per token."""
        return int(batch["target_lengths"].sum())

    # ------------------------------------------------------------------ loop
    def forward(self, model: torch.nn.Module, batch: Batch, *, train: bool) -> Any:
        """Training: logits_BTV with `model.teacher_forcing`. Evaluation: fully teacher-forced
        logits (loss, token accuracy) and the decoded outputs (exact match, BLEU, chrF)."""
        if train:
            return model(batch["x"], batch["lengths"], batch["y_in"],
                         teacher_forcing=self.cfg.model.teacher_forcing)
        logits_BTV = model(batch["x"], batch["lengths"], batch["y_in"], teacher_forcing=1.0)
        decoded = model.decode(batch["x"], batch["lengths"])
        return {"logits": logits_BTV, "tokens": decoded.tokens}

    def loss(self, outputs: Any, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy per target token (nats), <eos> included, padding skipped."""
        logits_BTV = outputs["logits"] if isinstance(outputs, dict) else outputs
        return F.cross_entropy(logits_BTV.float().flatten(0, 1), batch["y_out"].flatten(),
                               ignore_index=IGNORE)

    def new_state(self, device: torch.device | str = "cpu") -> MetricState:
        return {
            "loss_sum": torch.zeros((), dtype=torch.float64, device=device),  # nats
            "tokens": torch.zeros((), dtype=torch.int64, device=device),  # target tokens + <eos>
            "correct": torch.zeros((), dtype=torch.int64, device=device),  # teacher-forced argmax hits
            "hypotheses": [],  # decoded strings, in batch order (val/test run whole on every rank)
            "references": [],
        }

    def update(self, state: MetricState, outputs: Any, batch: Batch) -> None:
        logits_BTV, y_out_BT = outputs["logits"].float(), batch["y_out"]
        state["loss_sum"] += F.cross_entropy(logits_BTV.flatten(0, 1), y_out_BT.flatten(),
                                             ignore_index=IGNORE, reduction="sum").detach().double()
        hits, count = token_hits(logits_BTV, y_out_BT)
        state["correct"] += hits
        state["tokens"] += count
        references = y_out_BT.cpu().tolist()
        for tokens, reference, length in zip(outputs["tokens"], references,
                                             batch["target_lengths"].tolist()):
            state["hypotheses"].append(self.to_text(tokens))
            state["references"].append(self.to_text(reference[: length - 1]))

    def compute(self, state: MetricState) -> dict[str, float]:
        tokens = max(int(state["tokens"]), 1)
        return {
            "loss": float(state["loss_sum"]) / tokens,
            "token_accuracy": int(state["correct"]) / tokens,
            **text_scores(state["hypotheses"], state["references"], level=self.level),
        }

    # ------------------------------------------------------------------ text
    def to_text(self, ids: list[int]) -> str:
        """Target ids -> text; pad, <bos> and <eos> are dropped, <unk> is written as "<unk>"."""
        vocab = self.pre.target_vocab
        return detokenize((vocab[i] for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID)), self.level)

    def source_text(self, ids: list[int]) -> str:
        return detokenize((self.pre.vocab[i] for i in ids if i != PAD_ID), self.level)

    def encode_sources(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw source strings -> (x_BS ids padded with 0, lengths_B), as the importer tokenizes."""
        ids = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"row {i}: source must be a string, got {type(text).__name__}")
            row = encode(tokenize(text, self.level, self.lowercase), self.source_index)
            if not row:
                raise ValueError(f"row {i}: empty source text; every source needs at least one token")
            ids.append(row)
        lengths_B = np.array([len(r) for r in ids], dtype=np.int64)
        flat = np.concatenate([np.asarray(r, dtype=np.int64) for r in ids]) if ids else np.zeros(0, np.int64)
        return pad_token_lists(flat, lengths_B), torch.from_numpy(lengths_B)

    # ------------------------------------------------------------------ after training
    def report(self, model: torch.nn.Module, table: pa.Table, state: MetricState) -> Report:
        from pipeline.tasks.plots import alignment_heatmap

        ids = table.column("id").to_pylist()
        sources = [self.source_text(x) for x in table.column("x").slice(0, EXAMPLES).to_pylist()]
        lines = []
        for row_id, source, reference, hypothesis in zip(ids, sources, state["references"],
                                                         state["hypotheses"]):
            mark = "=" if hypothesis == reference else "x"
            lines += [f"[{mark}] {row_id}", f"  source:     {source}", f"  reference:  {reference}",
                      f"  hypothesis: {hypothesis}", ""]
        out = Report(texts={"eval/translations.txt": "\n".join(lines)})

        examples = self.collate(table.slice(0, ATTENTION_EXAMPLES))
        decoded = model.decode(examples["x"], examples["lengths"], return_attention=True)
        source_tokens = [[self.pre.vocab[i] for i in x]
                         for x in table.column("x").slice(0, ATTENTION_EXAMPLES).to_pylist()]
        target_tokens = [[self.pre.target_vocab[i] for i in tokens] + ["<eos>"] for tokens in decoded.tokens]
        titles = [f"{row_id}: {self.to_text(tokens)}" for row_id, tokens in zip(ids, decoded.tokens)]
        out.figures["plots/attention.png"] = alignment_heatmap(
            decoded.attention, source_tokens, [t[: len(w)] for t, w in zip(target_tokens, decoded.attention)],
            titles)
        return out

    # ------------------------------------------------------------------ serving and gate
    # Input: column `source` (raw text). Output: `target` (decoded text) and `score` (mean log-
    # probability per decoded token, nats; closer to 0 is more confident).
    def predict(self, model: torch.nn.Module, inputs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        if "source" not in inputs.columns:
            raise ValueError("seq2seq predict needs a `source` column of strings; "
                             f"got columns {list(inputs.columns)}")
        beam_size = int(params.get("beam_size") or 0) or None
        max_length = int(params.get("max_length") or 0) or None
        texts, scores = [], []
        sources = inputs["source"].tolist()
        with torch.no_grad():
            for start in range(0, len(sources), PREDICT_BATCH):
                x_BS, lengths_B = self.encode_sources(sources[start : start + PREDICT_BATCH])
                decoded = model.decode(x_BS, lengths_B, beam_size=beam_size, max_length=max_length)
                texts += [self.to_text(tokens) for tokens in decoded.tokens]
                scores += decoded.scores
        return pd.DataFrame({"target": pd.Series(texts, dtype=object),
                             "score": np.asarray(scores, dtype=np.float64)})

    def raw_inputs(self, table: pa.Table) -> pd.DataFrame:
        return pd.DataFrame({"source": [self.source_text(x) for x in table.column("x").to_pylist()]})

    def gate_data(self, table: pa.Table) -> tuple[pd.DataFrame, Any]:
        sources = [self.source_text(x) for x in table.column("x").to_pylist()]
        references = [self.to_text(y) for y in table.column("y").to_pylist()]
        return pd.DataFrame({"source": sources}), references

    def score(self, outputs: pd.DataFrame, truth: Any) -> dict[str, float]:
        return text_scores(outputs["target"].tolist(), list(truth), level=self.level)

    def baseline_name(self) -> str:
        return "copy-the-source"

    def baseline(self, train: pa.Table, test: pa.Table) -> dict[str, float]:
        """Every test source, as the gate gives it to a model, returned unchanged as the output;
        scored by `score` (exact_match, bleu, chrf). Nothing is fit: `train` is unused."""
        inputs, truth = self.gate_data(test)
        return self.score(pd.DataFrame({"target": inputs["source"].tolist()}), truth)


def token_hits(logits_BTV: torch.Tensor, y_out_BT: torch.Tensor) -> tuple[int, int]:
    """(argmax predictions equal to the target, target tokens), skipping IGNORE padding."""
    valid_BT = y_out_BT != IGNORE
    return int(((logits_BTV.argmax(dim=-1) == y_out_BT) & valid_BT).sum()), int(valid_BT.sum())


def text_scores(hypotheses: list[str], references: list[str], *, level: str = "word") -> dict[str, float]:
    """Exact match (fraction of identical strings) and corpus BLEU and chrF (sacrebleu, 0-100).

    BLEU counts character n-grams for character-level data (sacrebleu tokenize="char") and words
    (13a) otherwise. An empty corpus scores 0.
    """
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    if not references:
        return {"exact_match": 0.0, "bleu": 0.0, "chrf": 0.0}
    exact = sum(h == r for h, r in zip(hypotheses, references)) / len(references)
    tokenize = "char" if level == "char" else "13a"
    bleu = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenize).score
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    return {"exact_match": float(exact), "bleu": float(bleu), "chrf": float(chrf)}
