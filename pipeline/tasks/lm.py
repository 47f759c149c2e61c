"""Language modelling: next-token cross-entropy, perplexity, bits per character, sampling.

Training is truncated backpropagation through time (TBPTT). A split's token stream (its rows
ordered by id, concatenated) is cut into `num_streams` equal contiguous streams, laid side by
side as the rows of a (streams x length) matrix; each batch is the next `train.bptt` columns, with
the targets one token ahead. The recurrent state leaving a chunk enters the next chunk of the same
streams, detached, so the model sees context far longer than `bptt` while gradients stop at the
chunk boundary. The state is reset at the start of every pass (`start_epoch`).

Data-parallel training: every rank reads the whole train split (`split_train = False`), the
stream is cut into world_size x batch_size streams, and rank r takes streams
[r * batch_size, (r + 1) * batch_size). All streams have one length, so every rank runs the same
number of steps (DDP would hang otherwise); the tail that does not fill a stream (fewer than
world_size x batch_size tokens) is left out, and logged once.

Shape suffixes: B batch (streams), T time steps, V vocabulary, N tokens, S streams, L stream length.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from torch.nn import functional as F

from pipeline.data.dataset import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID
from pipeline.data.tokens import (
    NEWLINE,
    encode_corpus,
    join_tokens,
    stream_from_rows,
    token_index,
    tokenize_corpus,
)
from pipeline.task_metrics import TASK_METRICS
from pipeline.tasks.base import Batch, MetricState, Report, Task
from pipeline.tasks.lm_streams import (
    arrow_table,
    chunk_spans,
    cut_streams,
    detach_state,
    rank_and_world,
    state_batch,
    stream_batches,
)

LN2 = math.log(2.0)
PREDICT_CHUNK = 512  # tokens per forward pass when scoring text or reading a prompt
GATE_PIECES = 4  # the test text is scored as this many contiguous pieces
NEVER_SAMPLED = (PAD_ID, BOS_ID, EOS_ID)  # never targets in training: never generated
UNK_CHAR = "\ufffd"  # how an unknown character is written out (char level)


# ----------------------------------------------------------------------------------- metrics


def perplexity(loss_nats: float) -> float:
    """exp(mean cross-entropy in nats per token); inf when that overflows."""
    try:
        return math.exp(loss_nats)
    except OverflowError:
        return math.inf


def bits_per_char(total_nats: float, characters: float) -> float:
    """Total cross-entropy (nats) over the characters it covers, in bits: nats / chars / ln 2."""
    return total_nats / characters / LN2 if characters > 0 else math.nan


# ---------------------------------------------------------------------------------- sampling


def sample_next(logits_V: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0,
                generator: torch.Generator | None = None) -> int:
    """Draw the next token id from logits: temperature-scaled softmax over the `top_k` most likely
    tokens (all when 0); padding, <bos> and <eos> are never drawn. top_k=1 is greedy argmax."""
    logits_V = logits_V.detach().float().clone()
    never = [i for i in NEVER_SAMPLED if i < logits_V.shape[0]]
    logits_V[never] = -math.inf
    if 0 < top_k < logits_V.shape[0]:
        kth = torch.topk(logits_V, top_k).values[-1]
        logits_V[logits_V < kth] = -math.inf
    probs_V = torch.softmax(logits_V / temperature, dim=-1)
    return int(torch.multinomial(probs_V, 1, generator=generator))


# -------------------------------------------------------------------------------------- task


class LanguageModelTask(Task):
    name = "lm"
    # the names live in pipeline.task_metrics, which config validation reads without torch
    metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["lm"].metrics
    higher_is_better: ClassVar[dict[str, bool]] = TASK_METRICS["lm"].higher_is_better
    gate_metrics: ClassVar[tuple[str, ...]] = TASK_METRICS["lm"].gate_metrics
    default_gate_metric = TASK_METRICS["lm"].default_gate_metric
    split_train = False
    predict_params: ClassVar[dict[str, Any]] = {"max_new_tokens": 0, "temperature": 1.0, "top_k": 0,
                                                "seed": 0}

    def __init__(self, pre: Any, cfg: Any = None) -> None:
        super().__init__(pre, cfg)
        params = pre.task_params
        self.vocab: list[str] = list(pre.vocab)
        self.level: str = params.get("level", "char")
        self.lowercase: bool = bool(params.get("lowercase", False))
        self.music: bool = bool(params.get("music"))  # note-event tokens (the music importer's)
        self.index = token_index(self.vocab)
        self.bptt = self.cfg.train.bptt
        # Characters per token of each split, so bits per character on word level divides by the
        # characters of the text (char level: exactly 1).
        tokens, characters = params.get("tokens", {}), params.get("characters", {})
        self.chars_per_token = {split: characters[split] / tokens[split]
                                for split in tokens if tokens.get(split) and split in characters}
        self._state: Any = None  # recurrent state carried from one chunk to the next
        # "train" / "val": this rank's streams (stream_BL) and characters per token, read once
        self._streams: dict[str, tuple[np.ndarray, float]] = {}

    # ------------------------------------------------------------------ model
    def build_model(self) -> torch.nn.Module:
        from pipeline.models.language_model import LanguageModel

        m = self.cfg.model
        return LanguageModel(vocab_size=len(self.vocab), **m.encoder_args(),
                             embedding_size=m.embedding_size, tie_weights=m.tie_weights)

    # ------------------------------------------------------------------ data
    def _chars_per_token(self, table: pa.Table) -> float:
        if self.level == "char" or table.num_rows == 0:
            return 1.0
        split = table.column("id")[0].as_py().rsplit(":", 1)[0]
        return self.chars_per_token.get(split, 1.0)

    def collate(self, table: pa.Table) -> Batch:
        """Rows on their own (no carried state): x = each row but its last token, y = but its first."""
        from pipeline.data.preprocess import arrow_lists, pad_token_lists

        ids_N, lengths_B = arrow_lists(table.column("x"))
        if lengths_B.size and lengths_B.min() < 2:
            raise ValueError("every row needs at least 2 tokens to predict one from the other")
        starts = np.concatenate([[0], np.cumsum(lengths_B)[:-1]])
        keep_x = np.ones(len(ids_N), dtype=bool)
        keep_x[starts + lengths_B - 1] = False
        keep_y = np.ones(len(ids_N), dtype=bool)
        keep_y[starts] = False
        x_BT = pad_token_lists(ids_N[keep_x], lengths_B - 1)
        y_BT = pad_token_lists(ids_N[keep_y], lengths_B - 1)
        return {"x": x_BT, "lengths": torch.from_numpy(lengths_B - 1), "y": y_BT,
                "characters": torch.tensor(float((lengths_B - 1).sum()) * self._chars_per_token(table),
                                           dtype=torch.float64)}

    def loss_weight(self, batch: Batch) -> int:
        return int(batch["y"].numel())

    def streams(self, table: pa.Table, *, what: str, world_size: int, rank: int,
                batch_size: int) -> np.ndarray:
        """This rank's streams of a split (stream_BL), with a clear error when they are too short
        (`lm_streams.cut_streams`)."""
        return cut_streams(stream_from_rows(table), what=what, world_size=world_size, rank=rank,
                           batch_size=batch_size, bptt=self.bptt)

    def train_batches(self, shard: Any, *, batch_size: int, epoch: int, seed: int) -> Iterator[Batch]:
        """TBPTT chunks of this rank's streams of the whole train split (the same every epoch)."""
        if "train" not in self._streams:  # read once: the split does not change during a run
            table = arrow_table(shard)
            rank, world = rank_and_world()
            self._streams["train"] = (self.streams(table, what="train", world_size=world, rank=rank,
                                                   batch_size=batch_size), self._chars_per_token(table))
        return stream_batches(self._streams["train"][0], self.bptt, self._streams["train"][1])

    def eval_batches(self, iterator: Any, *, batch_size: int) -> Iterator[Batch]:
        """TBPTT chunks over all of val (every rank evaluates the same streams)."""
        if "val" not in self._streams:
            table = arrow_table(iterator)
            self._streams["val"] = (self.streams(table, what="val", world_size=1, rank=0,
                                                 batch_size=batch_size), self._chars_per_token(table))
        return stream_batches(self._streams["val"][0], self.bptt, self._streams["val"][1])

    def table_batches(self, table: pa.Table, batch_size: int = 256) -> Iterator[Batch]:
        """TBPTT chunks over an in-memory split. Uses data.batch_size streams (not `batch_size`),
        as validation does, so test and val numbers compare."""
        streams = self.streams(table, what="test", world_size=1, rank=0, batch_size=self.cfg.data.batch_size)
        return stream_batches(streams, self.bptt, self._chars_per_token(table))

    # ------------------------------------------------------------------ loop
    def start_epoch(self, train: bool) -> None:
        self._state = None

    def forward(self, model: torch.nn.Module, batch: Batch, *, train: bool) -> torch.Tensor:
        """Logits for the chunk, starting from the detached state the previous chunk left."""
        state = self._state
        if state is not None and state_batch(state) != batch["x"].shape[0]:
            state = None  # a batch of other streams: nothing to carry
        logits_BTV, new_state = model(batch["x"], batch["lengths"], state)
        self._state = detach_state(new_state)
        return logits_BTV

    def loss(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy per target token (nats)."""
        return F.cross_entropy(outputs.float().flatten(0, 1), batch["y"].flatten())

    def new_state(self, device: torch.device | str = "cpu") -> MetricState:
        return {
            "loss_sum": torch.zeros((), dtype=torch.float64, device=device),  # nats
            "tokens": torch.zeros((), dtype=torch.int64, device=device),  # predicted tokens
            "characters": torch.zeros((), dtype=torch.float64, device=device),  # they cover
        }

    def update(self, state: MetricState, outputs: torch.Tensor, batch: Batch) -> None:
        y_BT = batch["y"]
        nats = F.cross_entropy(outputs.float().flatten(0, 1), y_BT.flatten(), reduction="sum")
        state["loss_sum"] += nats.detach().double()
        state["tokens"] += y_BT.numel()
        state["characters"] += batch["characters"].to(state["characters"].device)

    def compute(self, state: MetricState) -> dict[str, float]:
        nats, tokens = float(state["loss_sum"]), int(state["tokens"])
        loss = nats / max(tokens, 1)
        return {"loss": loss, "perplexity": perplexity(loss),
                "bits_per_char": bits_per_char(nats, float(state["characters"]))}

    # ------------------------------------------------------------------ after training
    def decode(self, ids: list[int]) -> list[str]:
        """Token ids -> token strings (<unk> written as U+FFFD on char level)."""
        unk = UNK_CHAR if self.level == "char" else SPECIALS[UNK_ID]
        return [unk if i < len(SPECIALS) else self.vocab[i] for i in ids]

    def default_prompt(self, table: pa.Table) -> str:
        """The first complete line of the test text (the split may start mid-line), with its newline."""
        stream = stream_from_rows(table)[:4096].tolist()
        lines = join_tokens(self.decode(stream), self.level).split(NEWLINE)
        complete = [line for line in lines[1:-1] if line.strip()]
        return (complete[0] if complete else lines[0]) + NEWLINE

    def report(self, model: torch.nn.Module, table: pa.Table, state: MetricState) -> Report:
        if self.music:  # note events: n-gram references, samples as MIDI and piano rolls too
            from pipeline.tasks.music import music_report

            return music_report(self, model, table)
        return Report(texts=self.samples(model, table)[0])

    def samples(self, model: torch.nn.Module, table: pa.Table,
                default_prompt: str | None = None) -> tuple[dict[str, str], list[str]]:
        """`generate.samples` samples: `eval/samples.txt`, and each sample's generated text.
        The prompt is `generate.prompt`, else `default_prompt`, else the first test line."""
        gen = self.cfg.generate
        if gen.samples == 0:
            return {}, []
        prompt = gen.prompt if gen.prompt is not None else (
            default_prompt if default_prompt is not None else self.default_prompt(table))
        params = {"max_new_tokens": gen.length, "temperature": gen.temperature, "top_k": gen.top_k,
                  "seed": gen.seed}
        out = self.predict(model, pd.DataFrame({"text": [prompt] * gen.samples}), params)
        header = (f"# {gen.samples} samples of {gen.length} {self.level} tokens, temperature "
                  f"{gen.temperature}, top_k {gen.top_k}, seed {gen.seed}; prompt {prompt!r}\n")
        body = "".join(f"\n----- sample {i + 1} -----\n{text}\n" for i, text in enumerate(out["text"]))
        return {"eval/samples.txt": header + body}, out["generated"].tolist()

    def curves(self, history: dict[str, list[tuple[int, float]]]) -> Report:
        """Train and val perplexity per epoch: exp of train_loss and val_loss, both mean nats per
        target token (train: averaged over the epoch's steps while the weights moved, dropout on)."""
        from pipeline.tasks.plots import perplexity_curves

        per_epoch = {split: [(epoch, perplexity(loss)) for epoch, loss in history.get(f"{split}_loss", [])]
                     for split in ("train", "val")}
        if not any(per_epoch.values()):
            return Report()
        return Report(figures={"plots/perplexity.png": perplexity_curves(per_epoch)})

    # ------------------------------------------------------------------ serving and gate
    def _encode_text(self, text: str) -> list[str]:
        return tokenize_corpus(text.lower() if self.lowercase else text, self.level)

    @torch.no_grad()
    def score_text(self, model: torch.nn.Module, text: str) -> tuple[float, int, int]:
        """(total nats, predicted tokens, characters they cover) of `text` under the model: every
        token after the first is predicted from all before it, in chunks carrying the state."""
        pieces = self._encode_text(text)
        if len(pieces) < 2:
            return 0.0, 0, 0
        ids = torch.from_numpy(encode_corpus(pieces, self.index).astype(np.int64))
        nats, state = 0.0, None
        for start, steps in chunk_spans(len(ids), PREDICT_CHUNK):
            x_1T = ids[start : start + steps].unsqueeze(0)
            logits_1TV, state = model(x_1T, torch.tensor([steps]), state)
            y_T = ids[start + 1 : start + 1 + steps]
            nats += float(F.cross_entropy(logits_1TV[0].float(), y_T, reduction="sum"))
        return nats, len(ids) - 1, predicted_characters(pieces, self.level)

    @torch.no_grad()
    def generate_text(self, model: torch.nn.Module, prompt: str, *, max_new_tokens: int,
                      temperature: float, top_k: int, generator: torch.Generator) -> str:
        """The continuation of `prompt` (`max_new_tokens` sampled tokens, as text). An empty prompt
        starts from a newline."""
        pieces = self._encode_text(prompt) or [NEWLINE]
        ids = torch.from_numpy(encode_corpus(pieces, self.index).astype(np.int64))
        state = None
        for start in range(0, len(ids) - 1, PREDICT_CHUNK):  # read the prompt but its last token
            x_1T = ids[start : min(start + PREDICT_CHUNK, len(ids) - 1)].unsqueeze(0)
            _, state = model(x_1T, torch.tensor([x_1T.shape[1]]), state)
        current, new_ids = int(ids[-1]), []
        one = torch.tensor([1])
        for _ in range(max_new_tokens):
            logits_11V, state = model(torch.tensor([[current]]), one, state)
            current = sample_next(logits_11V[0, -1], temperature=temperature, top_k=top_k,
                                  generator=generator)
            new_ids.append(current)
        return join_tokens(self.decode(new_ids), self.level, after=prompt)

    # Input: column `text` (one string per row). Params: max_new_tokens (0: score the text),
    # temperature, top_k (0: all tokens), seed. Scoring outputs `nll` (total nats over the tokens
    # after the first), `tokens`, `characters`; generating outputs `text` (prompt + continuation)
    # and `generated` (the continuation).
    def predict(self, model: torch.nn.Module, inputs: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        p = {**self.predict_params, **(params or {})}
        if "text" not in inputs.columns:
            raise ValueError(f"lm model input needs a column 'text' (one string per row); got "
                             f"{list(inputs.columns)}")
        texts = ["" if t is None else str(t) for t in inputs["text"].tolist()]
        model.eval()
        max_new = int(p["max_new_tokens"])
        if max_new <= 0:
            scored = [self.score_text(model, t) for t in texts]
            return pd.DataFrame({
                "nll": np.array([s[0] for s in scored], dtype=np.float64),
                "tokens": np.array([s[1] for s in scored], dtype=np.int64),
                "characters": np.array([s[2] for s in scored], dtype=np.int64),
            })
        temperature, top_k = float(p["temperature"]), int(p["top_k"])
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        generator = torch.Generator().manual_seed(int(p["seed"]))
        generated = [self.generate_text(model, t, max_new_tokens=max_new, temperature=temperature,
                                        top_k=top_k, generator=generator) for t in texts]
        return pd.DataFrame({"text": [t + g for t, g in zip(texts, generated)], "generated": generated})

    def raw_inputs(self, table: pa.Table) -> pd.DataFrame:
        """Each row's block of the token stream as text (scored on its own, from its first token)."""
        return pd.DataFrame({"text": [join_tokens(self.decode(ids), self.level)
                                      for ids in table.column("x").to_pylist()]})

    def gate_data(self, table: pa.Table) -> tuple[pd.DataFrame, Any]:
        """The test text (decoded from its stream) as GATE_PIECES contiguous pieces; no truth
        beyond the text itself."""
        stream = stream_from_rows(table).tolist()
        count = max(1, min(GATE_PIECES, len(stream) // 2))
        bounds = np.linspace(0, len(stream), count + 1).astype(int)
        tokens = self.decode(stream)
        texts = [join_tokens(tokens[a:b], self.level) for a, b in zip(bounds[:-1], bounds[1:])]
        return pd.DataFrame({"text": texts}), None

    def score(self, outputs: pd.DataFrame, truth: Any) -> dict[str, float]:
        nats, tokens = float(outputs["nll"].sum()), int(outputs["tokens"].sum())
        return {"perplexity": perplexity(nats / max(tokens, 1)),
                "bits_per_char": bits_per_char(nats, float(outputs["characters"].sum()))}

    def baseline_name(self) -> str:
        return "unigram (add-one)"

    def baseline(self, train: pa.Table, test: pa.Table) -> dict[str, float]:
        """A unigram model of the train stream's token counts with add-one smoothing over the
        whole vocabulary (the model's output space, specials included): p(t) = (count(t) + 1) /
        (train tokens + vocabulary size). It scores the gate's test pieces as `score_text` scores
        a model's (every token after a piece's first), and `score` turns that into perplexity and
        bits_per_char. `bigram_perplexity`: the add-one bigram on the same pieces, a reference."""
        from pipeline.tasks.ngram import bigram_nll, unigram_nll

        train_N, vocab_size = stream_from_rows(train), len(self.vocab)
        inputs, truth = self.gate_data(test)
        nll, bigram, tokens, characters = [], 0.0, [], []
        for text in inputs["text"].tolist():
            pieces = self._encode_text(text)
            ids = encode_corpus(pieces, self.index).astype(np.int64)
            nll.append(unigram_nll(train_N, ids[1:], vocab_size))
            bigram += bigram_nll(train_N, ids[:-1], ids[1:], vocab_size)
            tokens.append(max(len(ids) - 1, 0))
            characters.append(predicted_characters(pieces, self.level) if len(ids) > 1 else 0)
        scores = self.score(pd.DataFrame({"nll": nll, "tokens": tokens, "characters": characters}), truth)
        # a reference, not the gate's bar: the add-one bigram on the same pieces (pipeline.tasks.ngram)
        return {**scores, "bigram_perplexity": perplexity(bigram / max(sum(tokens), 1))}


def predicted_characters(pieces: list[str], level: str) -> int:
    """Characters of the text of `pieces` that the predicted tokens (all but the first) cover."""
    return len(join_tokens(pieces, level)) - len(pieces[0])
