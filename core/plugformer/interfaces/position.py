"""Positional encodings: where a model learns token order."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from plugformer.interfaces.dims import ModelDims


class PositionEncoding(nn.Module):
    """Positional information, injected at up to three points of the model.

    Construction: ``Cls(config, dims)``. One module serves the whole model; override what applies:

    - :meth:`embed` adds to the token embeddings (learned, sinusoidal);
    - :meth:`rotate` transforms q and k inside every attention layer, before the KV cache (RoPE);
    - :meth:`attention_bias` returns an additive bias for the attention scores (ALiBi).

    ``positions`` are absolute int64 positions of shape (T,), ``past .. past+T`` while decoding.
    The defaults do nothing, so a NoPE model is ``PositionEncoding`` itself. An encoding that relies on
    :meth:`attention_bias` declares ``capabilities={"needs_attention": ["attention_bias"]}`` at
    registration, so backends that cannot add a bias are refused before training.
    """

    def __init__(self, config: Any, dims: ModelDims):
        super().__init__()
        self.config, self.dims = config, dims

    def embed(self, x: Tensor, positions: Tensor) -> Tensor:
        """x: (B, T, d_model) token embeddings → same shape with positions mixed in."""
        return x

    def rotate(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """q: (B, H, T, D), k: (B, Hkv, T, D) → the same shapes, position-dependent."""
        return q, k

    def attention_bias(self, q_positions: Tensor, k_positions: Tensor) -> Tensor | None:
        """Additive bias broadcastable to (B, H, Tq, Tk), or None."""
        return None
