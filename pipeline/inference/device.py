"""Run a registered model on a GPU without changing the tasks' CPU-written `predict` code.

`Task.predict` builds its input tensors on the CPU and reads results with `.numpy()`. The
MLflow model loads on the CPU. `place_on_device` moves the torch module to the device and puts
`OnDevice` in its place: calling it (or one of its methods, e.g. a seq2seq model's `decode`)
moves tensor arguments to the device and tensor results back to the CPU. recur's models already
keep their own tensors on their inputs' device (and lengths on the CPU for packing).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch


def move(value: Any, device: torch.device | str) -> Any:
    """`value` with every tensor inside (tuples, lists, dicts, dataclasses) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # named tuple
        return type(value)(*(move(v, device) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(move(v, device) for v in value)
    if isinstance(value, dict):
        return {k: move(v, device) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: move(getattr(value, f.name), device) for f in dataclasses.fields(value)
                   if f.init}
        return dataclasses.replace(value, **changes)
    return value


class OnDevice:
    """A torch module on `device` that takes and returns CPU tensors (see the module docstring)."""

    def __init__(self, module: torch.nn.Module, device: torch.device | str) -> None:
        self.module = module.to(device)
        self.device = torch.device(device)

    def _wrap(self, fn: Any) -> Any:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            result = fn(*move(args, self.device), **move(kwargs, self.device))
            return result if isinstance(result, torch.nn.Module) else move(result, "cpu")

        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrap(self.module)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.module, name)
        if callable(value) and not isinstance(value, (torch.nn.Module, type)):
            return self._wrap(value)
        return value


def place_on_device(pyfunc_model: Any, device: torch.device | str) -> bool:
    """Move a loaded recur pyfunc's torch model to `device`; False when it has none to move."""
    python_model = pyfunc_model.unwrap_python_model()
    module = getattr(python_model, "model", None)
    if not isinstance(module, torch.nn.Module):
        return False
    python_model.model = OnDevice(module, device)
    return True
