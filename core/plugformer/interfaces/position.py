"""Positional encodings: where a model learns token order."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from plugformer.interfaces.dims import ModelDims


@dataclass(frozen=True)
class Positions:
    """The absolute positions of the tokens in one forward pass.

    Uniform (training, single-sequence decoding): every row holds ``start .. start+length-1``. The
    bounds are plain ints, so an encoding can check them (``end > max_seq_len``) or slice its tables
    without a device synchronisation; :attr:`tensor` is the int64 ``arange`` on the device.

    Ragged (batched decoding, plugin API 1.1): rows sit at different positions. :attr:`rows` is then the
    (B, T) int64 tensor of each row's own positions (padding entries hold a valid position too) and
    ``start``/:attr:`end` bound every entry of it, still as host ints. Build it with :meth:`ragged`.
    An encoding declaring the ``ragged`` capability reads :meth:`per_row` (or :attr:`rows`) instead of
    :attr:`tensor`; the engine refuses encodings that do not declare it.
    """

    start: int
    length: int
    device: torch.device | str = "cpu"
    #: (B, T) per-row positions of a ragged batch; None when every row holds ``start .. start+length-1``
    rows: Tensor | None = field(default=None, repr=False, compare=False)
    #: with ``rows``: one past the largest entry (a host int); None: ``start + length``
    stop: int | None = None
    tensor: Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensor", torch.arange(self.start, self.start + self.length, device=self.device))

    @classmethod
    def ragged(cls, rows: Tensor, start: int, stop: int) -> Positions:
        """Per-row positions ``rows`` (B, T) whose entries all lie in ``start .. stop-1`` (the caller
        knows the bounds on the host, so no device synchronisation is needed)."""
        return cls(start, rows.shape[1], rows.device, rows=rows, stop=stop)

    @property
    def end(self) -> int:
        """One past the last (largest) position."""
        return self.stop if self.stop is not None else self.start + self.length

    @property
    def is_ragged(self) -> bool:
        """True when rows hold different positions (:attr:`rows` is set)."""
        return self.rows is not None

    def per_row(self) -> Tensor:
        """Positions as a (B, T) tensor for a ragged batch, or (1, T) (broadcasting over rows) otherwise."""
        return self.rows if self.rows is not None else self.tensor.unsqueeze(0)


class PositionEncoding(nn.Module):
    """Positional information, injected at up to three points of the model.

    Construction: ``Cls(config, dims)``. One module serves the whole model; override what applies:

    - :meth:`embed` adds to the token embeddings (learned, sinusoidal);
    - :meth:`rotate` transforms q and k inside every attention layer, before the KV cache (RoPE);
    - :meth:`attention_bias` returns an additive bias for the attention scores (ALiBi).

    ``positions`` is a :class:`Positions` range: ``0 .. T-1`` in training, ``past .. past+T-1`` while decoding,
    or, for a batch whose rows sit at different positions (the inference engine), per-row positions
    (:attr:`Positions.rows`, shape (B, T)): an encoding that handles those declares the ``ragged``
    capability. With ragged queries the keys are uniform (``0 .. Tk-1``: each row's cached keys in order).
    The defaults do nothing, so a NoPE model is ``PositionEncoding`` itself. An encoding that relies on
    :meth:`attention_bias` declares ``capabilities={"needs_attention": ["attention_bias"]}`` at
    registration, so backends that cannot add a bias are refused before training.
    """

    def __init__(self, config: Any, dims: ModelDims):
        super().__init__()
        self.config, self.dims = config, dims

    def embed(self, x: Tensor, positions: Positions) -> Tensor:
        """x: (B, T, d_model) token embeddings → same shape with positions mixed in (row ``b`` at
        ``positions.per_row()[b]`` when ragged)."""
        return x

    def rotate(self, q: Tensor, k: Tensor, positions: Positions) -> tuple[Tensor, Tensor]:
        """q: (B, H, T, D), k: (B, Hkv, T, D) → the same shapes, position-dependent."""
        return q, k

    def attention_bias(self, q_positions: Positions, k_positions: Positions) -> Tensor | None:
        """Additive bias broadcastable to (B, H, Tq, Tk), or None. With ragged ``q_positions`` the bias
        has a batch dimension (row ``b``'s queries at ``q_positions.rows[b]``)."""
        return None
