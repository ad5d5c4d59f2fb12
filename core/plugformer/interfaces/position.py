"""Positional encodings: where a model learns token order."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from plugformer.interfaces.dims import ModelDims


@dataclass(frozen=True)
class Positions:
    """The absolute positions ``start .. start+length-1`` of the tokens in one forward pass.

    The bounds are plain ints, so an encoding can check them (``end > max_seq_len``) or slice its
    tables without a device synchronisation; :attr:`tensor` is the int64 ``arange`` on the device.
    """

    start: int
    length: int
    device: torch.device | str = "cpu"
    tensor: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensor", torch.arange(self.start, self.end, device=self.device))

    @property
    def end(self) -> int:
        """One past the last position."""
        return self.start + self.length


class PositionEncoding(nn.Module):
    """Positional information, injected at up to three points of the model.

    Construction: ``Cls(config, dims)``. One module serves the whole model; override what applies:

    - :meth:`embed` adds to the token embeddings (learned, sinusoidal);
    - :meth:`rotate` transforms q and k inside every attention layer, before the KV cache (RoPE);
    - :meth:`attention_bias` returns an additive bias for the attention scores (ALiBi).

    ``positions`` is a :class:`Positions` range: ``0 .. T-1`` in training, ``past .. past+T-1`` while decoding.
    The defaults do nothing, so a NoPE model is ``PositionEncoding`` itself. An encoding that relies on
    :meth:`attention_bias` declares ``capabilities={"needs_attention": ["attention_bias"]}`` at
    registration, so backends that cannot add a bias are refused before training.
    """

    def __init__(self, config: Any, dims: ModelDims):
        super().__init__()
        self.config, self.dims = config, dims

    def embed(self, x: Tensor, positions: Positions) -> Tensor:
        """x: (B, T, d_model) token embeddings → same shape with positions mixed in."""
        return x

    def rotate(self, q: Tensor, k: Tensor, positions: Positions) -> tuple[Tensor, Tensor]:
        """q: (B, H, T, D), k: (B, Hkv, T, D) → the same shapes, position-dependent."""
        return q, k

    def attention_bias(self, q_positions: Positions, k_positions: Positions) -> Tensor | None:
        """Additive bias broadcastable to (B, H, Tq, Tk), or None."""
        return None
