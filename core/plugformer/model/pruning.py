"""Magnitude pruning: zero the smallest-magnitude weights of the transformer blocks' linear layers to a
target sparsity, globally (one threshold over all of them) or per layer (each layer to the same
sparsity), and make it permanent.

Built on ``torch.nn.utils.prune`` (L1 unstructured): the mask is computed with ``global_unstructured``
or ``l1_unstructured``, then ``prune.remove`` folds it into the weight, so the result is a plain model
whose state dict has the usual keys (zeros in place of the pruned weights). Embeddings, the tied LM head,
norms and biases are left dense.
"""
from __future__ import annotations

from enum import Enum

import torch
from torch import nn
from torch.nn.utils import prune

from plugformer.errors import ConfigError
from plugformer.interfaces import ModelTransform, Stage


class PruneScope(str, Enum):
    """Where the sparsity target applies."""

    global_ = "global"  # one magnitude threshold across all pruned layers (layers end up unevenly sparse)
    layer = "layer"  # every pruned layer reaches the target on its own


def prunable_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """(qualified name, module) of every ``nn.Linear`` inside the transformer blocks."""
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise ConfigError(f"{type(model).__name__} has no transformer blocks (.blocks) to prune")
    return [(f"blocks.{name}", m) for name, m in blocks.named_modules() if isinstance(m, nn.Linear)]


class MagnitudePruning(ModelTransform):
    """Prunes ``sparsity`` of the block linear weights by magnitude (``scope`` global or per layer) and
    removes the pruning re-parametrisation, leaving zeros in a plain weight tensor. After :meth:`apply`,
    :attr:`pruned` names the pruned parameters (what fine-tuning keeps at zero)."""

    stage = Stage.QUANTIZE  # like a quantizer, it rewrites weights before training/serving

    def __init__(self, sparsity: float, scope: str | PruneScope = PruneScope.global_):
        super().__init__({"sparsity": sparsity, "scope": str(getattr(scope, "value", scope))})
        if not 0.0 <= float(sparsity) < 1.0:
            raise ConfigError(f"sparsity={sparsity!r} must be in [0, 1)")
        scopes = [s.value for s in PruneScope]
        value = getattr(scope, "value", scope)
        if value not in scopes:
            raise ConfigError(f"scope={value!r} is not one of {', '.join(scopes)}")
        self.sparsity, self.scope = float(sparsity), PruneScope(value)
        self.pruned: list[str] = []

    @torch.no_grad()
    def apply(self, model: nn.Module) -> nn.Module:
        layers = prunable_linears(model)
        if not layers:
            raise ConfigError(f"{type(model).__name__} has no nn.Linear layers in its blocks to prune")
        if self.sparsity > 0:
            if self.scope == PruneScope.global_:
                prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured,
                                          amount=self.sparsity)
            else:
                for _, m in layers:
                    prune.l1_unstructured(m, "weight", amount=self.sparsity)
            for _, m in layers:
                prune.remove(m, "weight")
        self.pruned = [f"{name}.weight" for name, _ in layers]
        return model


def sparsity_report(model: nn.Module, names: list[str]) -> dict[str, float]:
    """Share of zeros in each named parameter and over all of them (key ``total``)."""
    params = dict(model.named_parameters())
    zeros = total = 0
    out: dict[str, float] = {}
    for name in names:
        p = params[name]
        z = int((p == 0).sum())
        out[name] = z / p.numel()
        zeros, total = zeros + z, total + p.numel()
    out["total"] = zeros / max(total, 1)
    return out


__all__ = ["MagnitudePruning", "PruneScope", "prunable_linears", "sparsity_report"]
