"""What differs between tasks, behind one small interface: loss, metric sums, derived metrics.

The loop, the worker and the evaluation step only talk to a `Task`. Metric state is a dict of
tensors holding SUMS, so data-parallel workers combine theirs with one `all_reduce` each and
derive identical numbers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

MetricState = dict[str, torch.Tensor]


class Task:
    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]  # what `compute` returns, "loss" first
    higher_is_better: ClassVar[dict[str, bool]]

    def loss(self, outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean training loss of a batch (the value backpropagated)."""
        raise NotImplementedError

    def new_state(self, device: torch.device | str = "cpu") -> MetricState:
        raise NotImplementedError

    def update(self, state: MetricState, outputs: Any, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def compute(self, state: MetricState) -> dict[str, float]:
        raise NotImplementedError
