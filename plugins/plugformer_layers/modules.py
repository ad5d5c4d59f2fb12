"""Norm and MLP modules."""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn.functional as F
from torch import Tensor, nn

from plugformer.interfaces import ModelDims
from plugformer_layers.schemas import GeluMLPConfig, LayerNormConfig, ReluMLPConfig, RMSNormConfig, SwiGLUConfig


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over d_model, with a bias only when the model uses biases."""

    def __init__(self, config: LayerNormConfig, dims: ModelDims):
        super().__init__(dims.d_model, eps=config.eps, bias=dims.bias)


class RMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` over d_model (Llama, T5): ``x / √(mean(x²) + eps) · weight``, never a bias.

    Cheaper than LayerNorm (no mean subtraction, no bias) and as stable in pre-norm transformers.
    """

    def __init__(self, config: RMSNormConfig, dims: ModelDims):
        super().__init__(dims.d_model, eps=config.eps)


class _TwoLayerMLP(nn.Module, ABC):
    """Linear → activation → Linear → dropout; subclasses choose the activation.

    The output projection is named ``proj_out`` so the core's depth-scaled init applies to it.
    """

    def __init__(self, hidden: int, dims: ModelDims):
        super().__init__()
        self.proj_in = nn.Linear(dims.d_model, hidden, bias=dims.bias)
        self.proj_out = nn.Linear(hidden, dims.d_model, bias=dims.bias)
        self.drop = nn.Dropout(dims.dropout)

    @abstractmethod
    def activation(self, h: Tensor) -> Tensor:
        """The nonlinearity between the two projections."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.proj_out(self.activation(self.proj_in(x)))
        return self.drop(out) if self.training else out  # dropout is the identity in eval: skip the call


class GeluMLP(_TwoLayerMLP):
    """Linear → GELU → Linear → dropout (GPT-2's feed-forward)."""

    def __init__(self, config: GeluMLPConfig, dims: ModelDims):
        approximate = getattr(config.approximate, "value", config.approximate)
        if approximate not in ("tanh", "none"):
            raise ValueError(f"mlp.approximate must be 'tanh' or 'none', got {approximate!r}")
        super().__init__(int(config.hidden_mult * dims.d_model), dims)
        self.approximate = approximate

    def activation(self, h: Tensor) -> Tensor:
        return F.gelu(h, approximate=self.approximate)


class ReluMLP(_TwoLayerMLP):
    """Linear → ReLU → Linear → dropout (the original transformer's feed-forward)."""

    def __init__(self, config: ReluMLPConfig, dims: ModelDims):
        super().__init__(int(config.hidden_mult * dims.d_model), dims)

    def activation(self, h: Tensor) -> Tensor:
        return F.relu(h)


def swiglu_hidden_size(config: SwiGLUConfig, d_model: int) -> int:
    """The SwiGLU hidden size: ``config.hidden_size`` if set, else Llama's rounded ⅔ rule.

    Three matrices instead of two, so ⅔ of ``hidden_mult × d_model`` keeps the parameter count of a
    plain MLP; rounding up to ``multiple_of`` keeps the matmuls on efficient shapes.
    """
    if config.hidden_size is not None:
        if config.hidden_size < 1:
            raise ValueError(f"mlp.hidden_size must be positive, got {config.hidden_size}")
        return int(config.hidden_size)
    if config.multiple_of < 1:
        raise ValueError(f"mlp.multiple_of must be positive, got {config.multiple_of}")
    base = int(2 * config.hidden_mult * d_model / 3)
    return config.multiple_of * -(-base // config.multiple_of)


class SwiGLU(nn.Module):
    """``proj_out(silu(gate(x)) · up(x))`` → dropout (Llama, PaLM): a gated MLP, better per FLOP.

    ``gate`` and ``up`` are one fused ``proj_in`` matmul. Its output rows interleave them (row 2j is gate
    unit j, row 2j+1 is up unit j), so a contiguous column-wise shard of ``proj_in`` holds matching gate
    and up units and a row-wise shard of ``proj_out`` consumes exactly them: the ``colwise_rowwise``
    tensor-parallel plan is correct without a custom split. (Weights from a ``[gate; up]`` layout must
    be interleaved on import.)
    """

    def __init__(self, config: SwiGLUConfig, dims: ModelDims):
        super().__init__()
        self.hidden = swiglu_hidden_size(config, dims.d_model)
        self.proj_in = nn.Linear(dims.d_model, 2 * self.hidden, bias=dims.bias)
        self.proj_out = nn.Linear(self.hidden, dims.d_model, bias=dims.bias)
        self.drop = nn.Dropout(dims.dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.proj_in(x).unflatten(-1, (-1, 2)).unbind(-1)
        out = self.proj_out(F.silu(gate) * up)
        return self.drop(out) if self.training else out
