"""Token streams for truncated backpropagation through time (TBPTT), as the language-model task
(`pipeline.tasks.lm`) trains and evaluates on them: a split's token stream cut into equal
contiguous streams (one share per data-parallel rank), the chunks over them, and the recurrent
state carried from one chunk to the next.

Shape suffixes: B batch (streams), T time steps, N tokens, S streams, L stream length.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline.tasks.base import Batch

log = logging.getLogger(__name__)


def rank_and_world() -> tuple[int, int]:
    """This process's data-parallel rank and world size: from torch.distributed, which Ray Train
    initializes before the worker function runs; (0, 1) outside data-parallel training."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def split_streams(stream_N: np.ndarray, num_streams: int) -> np.ndarray:
    """Cut a token stream into `num_streams` equal contiguous streams, stream_SL (S = num_streams).

    The last N mod S tokens do not fill a stream and are left out.
    """
    length = len(stream_N) // num_streams
    return stream_N[: num_streams * length].reshape(num_streams, length)


def rank_streams(stream_N: np.ndarray, *, world_size: int, rank: int, batch_size: int) -> np.ndarray:
    """Rank `rank`'s `batch_size` streams out of world_size x batch_size equal streams: stream_BL.

    Every rank gets the same L, hence the same number of chunks (`chunk_spans`).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside a world of {world_size}")
    streams_SL = split_streams(stream_N, world_size * batch_size)
    return streams_SL[rank * batch_size : (rank + 1) * batch_size]


def cut_streams(stream_N: np.ndarray, *, what: str, world_size: int, rank: int, batch_size: int,
                bptt: int) -> np.ndarray:
    """This rank's streams of a split's token stream (stream_BL), with a clear error when they are
    too short.

    Training needs every stream to hold at least one full chunk (bptt + 1 tokens); evaluation
    (world 1) uses fewer streams than `batch_size` when the split is short, down to one.
    """
    n = len(stream_N)
    if world_size > 1 or what == "train":
        num_streams = world_size * batch_size
        need = num_streams * (bptt + 1)
        if n < need:
            raise ValueError(
                f"{what} split: {n} tokens cannot make {world_size} worker(s) x data.batch_size="
                f"{batch_size} streams of at least one train.bptt={bptt} chunk ({need} tokens "
                "needed); lower data.batch_size, train.bptt or resources.num_workers, or use more text"
            )
    else:
        if n < 2:
            raise ValueError(f"{what} split: {n} token(s); at least 2 are needed to predict one")
        num_streams = max(1, min(batch_size, n // (bptt + 1)))
    dropped = n - n // num_streams * num_streams
    if dropped:
        log.info("%s split: %d tokens in %d streams of %d; the last %d token(s) are left out",
                 what, n, num_streams, n // num_streams, dropped)
    if world_size == 1:
        return split_streams(stream_N, num_streams)
    return rank_streams(stream_N, world_size=world_size, rank=rank, batch_size=batch_size)


def chunk_spans(length: int, bptt: int) -> list[tuple[int, int]]:
    """(start, steps) of each chunk of a stream of `length` tokens: inputs start..start+steps-1,
    targets one later. The last chunk may be shorter; a stream of length L gives L - 1 targets."""
    return [(t, min(bptt, length - 1 - t)) for t in range(0, length - 1, bptt)]


def stream_batches(streams_BL: np.ndarray, bptt: int, chars_per_token: float = 1.0) -> Iterator[Batch]:
    """Consecutive TBPTT chunks of `streams_BL`: x_BT, y_BT (= x shifted by one), lengths_B and
    `characters` (float64: the characters the targets cover, for bits per character)."""
    streams = torch.from_numpy(np.ascontiguousarray(streams_BL, dtype=np.int64))
    batch = streams.shape[0]
    for start, steps in chunk_spans(streams.shape[1], bptt):
        yield {
            "x": streams[:, start : start + steps].contiguous(),
            "lengths": torch.full((batch,), steps, dtype=torch.int64),
            "y": streams[:, start + 1 : start + 1 + steps].contiguous(),
            "characters": torch.tensor(batch * steps * chars_per_token, dtype=torch.float64),
        }


def detach_state(state: Any) -> Any:
    """The recurrent state without its autograd history (h, or (h, c) for an LSTM)."""
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def state_batch(state: Any) -> int:
    """How many streams a recurrent state is for (its batch dimension)."""
    return (state[0] if isinstance(state, tuple) else state).shape[1]


def arrow_table(iterator: Any) -> pa.Table:
    """Every row of a Ray Data iterator (or dataset shard) as one Arrow table."""
    tables = list(iterator.iter_batches(batch_size=None, batch_format="pyarrow"))
    if not tables:
        return pa.table({"id": pa.array([], pa.string()), "x": pa.array([], pa.list_(pa.int32()))})
    return pa.concat_tables(tables, promote_options="default")
