"""Optimizer and learning-rate scheduler factories, and the weight-decay parameter groups they share."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

#: the parameter kinds weight decay can exempt (the ``no_decay`` option of every built-in optimizer)
NO_DECAY_KINDS = ("norm", "bias", "embedding")


class OptimizerFactory(Protocol):
    """``factory(config, model) -> torch.optim.Optimizer``.

    - Returns a ``torch.optim.Optimizer`` (a subclass, or anything with ``param_groups``, ``step``,
      ``zero_grad``, ``state_dict`` and ``load_state_dict``). Each param group's ``"lr"`` is the peak
      learning rate; the scheduler scales it.
    - ``model`` is the model after its transforms (adapters, quantizers, activation checkpointing,
      compile, tensor parallelism), before any data-parallel wrapper: optimize only the parameters with
      ``requires_grad`` (an adapter freezes the base). Wrappers and engines receive the optimizer after
      (``ParallelStrategy.prepare``).
    - The core calls ``zero_grad`` and ``step`` (after clipping to ``trainer.grad_clip``) once per
      training step, after all ``trainer.grad_accum`` micro-batches, never more often.
    - ``state_dict()`` must hold only plain data and tensors: it is checkpointed as JSON + safetensors
      (no pickle) and must resume bit for bit (the conformance kit checks it).
    - Use :func:`param_groups` for weight decay only on matrices (no decay on norms, biases and
      embeddings), the convention of GPT-2/nanoGPT/Llama training.
    """

    def __call__(self, config: Any, model: nn.Module) -> torch.optim.Optimizer: ...


class SchedulerFactory(Protocol):
    """``factory(config, optimizer, max_steps) -> torch.optim.lr_scheduler.LRScheduler``.

    - Returns an object with ``step()``, ``get_last_lr()`` (the first value is logged as ``lr``),
      ``state_dict()`` and ``load_state_dict()``; an ``LRScheduler`` subclass (``LambdaLR`` ...) has them.
    - Built once, right after the optimizer; the learning rate at construction is the one of step 1.
    - Stepped exactly once per optimizer step, right after it (so after ``max_steps`` steps it has
      been stepped ``max_steps`` times); never per micro-batch, never at evaluation.
    - ``max_steps`` is ``trainer.max_steps`` of this run. Its ``state_dict()`` must hold only plain data
      and tensors (use ``LambdaLR`` with a callable object or a module-level function, not a lambda
      capturing state); on resume the core loads it into a freshly built scheduler, keeping this run's
      ``lr_lambdas`` objects.
    """

    def __call__(self, config: Any, optimizer: torch.optim.Optimizer, max_steps: int) -> Any: ...


def check_no_decay(no_decay: Iterable[Any]) -> frozenset[str]:
    """``no_decay`` as plain strings (enum members are read by value); a ValueError naming the valid kinds
    (:data:`NO_DECAY_KINDS`) for anything else."""
    kinds = frozenset(str(getattr(k, "value", k)) for k in no_decay)
    unknown = sorted(kinds - set(NO_DECAY_KINDS))
    if unknown:
        raise ValueError(f"optimizer.no_decay: unknown kind(s) {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(NO_DECAY_KINDS)}")
    return kinds


def param_kinds(model: nn.Module) -> list[tuple[str, nn.Parameter, set[str]]]:
    """``(name, param, kinds)`` for every trainable parameter (a tied tensor appears once), where kinds are
    those of :data:`NO_DECAY_KINDS` it belongs to: ``embedding`` (an ``nn.Embedding`` weight), ``norm``
    (any parameter of a module whose class name contains ``Norm``, or a 1-D ``...weight``) and ``bias``
    (a 1-D ``...bias``). Plugin modules are classified by the same rules."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    norms = {id(p) for m in model.modules() if "Norm" in type(m).__name__ for p in m.parameters(recurse=False)}
    found = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        kinds = set()
        if id(p) in embeddings:
            kinds.add("embedding")
        if id(p) in norms or (p.ndim == 1 and name.endswith("weight")):
            kinds.add("norm")
        if p.ndim == 1 and name.endswith("bias"):
            kinds.add("bias")
        found.append((name, p, kinds))
    return found


def param_groups(model: nn.Module, weight_decay: float,
                 no_decay: Iterable[Any] = NO_DECAY_KINDS) -> list[dict[str, Any]]:
    """Up to two optimizer param groups: parameters decayed by ``weight_decay``, and those of a ``no_decay``
    kind (see :func:`param_kinds`) with ``weight_decay`` 0. Empty groups are left out; frozen parameters
    (``requires_grad=False``) are in neither. Pass the result to any ``torch.optim`` optimizer."""
    exempt = check_no_decay(no_decay)
    decay, keep = [], []
    for _, p, kinds in param_kinds(model):
        (keep if kinds & exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
