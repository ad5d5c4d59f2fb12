"""Optimizer and learning-rate scheduler factories."""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn


class OptimizerFactory(Protocol):
    """``factory(config, model) -> torch.optim.Optimizer``.

    Use :func:`param_groups` to honour weight decay only on matrices (no decay on norms, biases and
    embeddings), the convention of GPT-2/nanoGPT/Llama training.
    """

    def __call__(self, config: Any, model: nn.Module) -> torch.optim.Optimizer: ...


class SchedulerFactory(Protocol):
    """``factory(config, optimizer, max_steps) -> torch.optim.lr_scheduler.LRScheduler``.

    Stepped once per optimizer step. Its ``state_dict()`` must hold only plain data and tensors (use
    ``LambdaLR`` with a callable object or a module-level function, not a lambda capturing state).
    """

    def __call__(self, config: Any, optimizer: torch.optim.Optimizer, max_steps: int) -> Any: ...


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed weight matrices, and everything else (norms, biases, embeddings)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
