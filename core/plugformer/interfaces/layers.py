"""Norm and MLP factories: the per-block layers around attention."""
from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from plugformer.interfaces.dims import ModelDims


class NormFactory(Protocol):
    """``factory(config, dims) -> nn.Module`` mapping (..., d_model) to the same shape.

    A class (``class RMSNorm(nn.Module): def __init__(self, config, dims)``) is such a factory.
    """

    def __call__(self, config: Any, dims: ModelDims) -> nn.Module: ...


class MLPFactory(Protocol):
    """``factory(config, dims) -> nn.Module`` mapping (B, T, d_model) to the same shape.

    Honour ``dims.bias`` for linear biases and ``dims.dropout`` for the output dropout. Output
    projections named ``*proj_out*`` get GPT-2's depth-scaled init from the core.
    """

    def __call__(self, config: Any, dims: ModelDims) -> nn.Module: ...
