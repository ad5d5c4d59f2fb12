"""Weight-decay parameter groups with a configurable set of exempt parameter kinds.

Decaying norm gains, biases or embeddings pulls them towards zero for no regularisation benefit, so
GPT-2/nanoGPT/Llama training exempts them; which kinds are exempt is the ``no_decay`` option of every
built-in optimizer.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

KINDS = ("norm", "bias", "embedding")


def check_kinds(no_decay: Iterable[Any]) -> frozenset[str]:
    """``no_decay`` as plain strings; a ValueError naming the valid kinds for anything else."""
    kinds = frozenset(str(getattr(k, "value", k)) for k in no_decay)
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise ValueError(f"optimizer.no_decay: unknown kind(s) {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(KINDS)}")
    return kinds


def param_kinds(model: nn.Module) -> list[tuple[str, nn.Parameter, set[str]]]:
    """``(name, param, kinds)`` for every trainable parameter (a tied tensor appears once)."""
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


def decay_groups(model: nn.Module, weight_decay: float, no_decay: Iterable[Any]) -> list[dict[str, Any]]:
    """Up to two groups: parameters decayed by ``weight_decay``, and those of a ``no_decay`` kind (0).

    Empty groups are left out; frozen parameters (``requires_grad=False``) are in neither.
    """
    exempt = check_kinds(no_decay)
    decay, keep = [], []
    for _, p, kinds in param_kinds(model):
        (keep if kinds & exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
