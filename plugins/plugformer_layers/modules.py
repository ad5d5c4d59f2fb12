"""Norm and MLP modules."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from plugformer.interfaces import ModelDims
from plugformer_layers.schemas import GeluMLPConfig, LayerNormConfig


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over d_model, with a bias only when the model uses biases."""

    def __init__(self, config: LayerNormConfig, dims: ModelDims):
        super().__init__(dims.d_model, eps=config.eps, bias=dims.bias)


class GeluMLP(nn.Module):
    """Linear → GELU → Linear → dropout."""

    def __init__(self, config: GeluMLPConfig, dims: ModelDims):
        super().__init__()
        approximate = getattr(config.approximate, "value", config.approximate)
        if approximate not in ("tanh", "none"):
            raise ValueError(f"mlp.approximate must be 'tanh' or 'none', got {approximate!r}")
        hidden = int(config.hidden_mult * dims.d_model)
        self.proj_in = nn.Linear(dims.d_model, hidden, bias=dims.bias)
        self.proj_out = nn.Linear(hidden, dims.d_model, bias=dims.bias)
        self.drop = nn.Dropout(dims.dropout)
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj_out(F.gelu(self.proj_in(x), approximate=self.approximate)))
