"""The sizes every model component is built with."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDims:
    """Shapes shared by all model components; passed as the second argument to each factory.

    ``n_kv_heads`` < ``n_heads`` means grouped-query attention (``n_heads % n_kv_heads == 0``).
    ``causal`` comes from the objective: False for bidirectional (encoder) models.
    """

    vocab_size: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    max_seq_len: int
    dropout: float = 0.0
    bias: bool = True
    causal: bool = True
    layer: int = 0  # index of the block a per-layer component is built for; -1 outside the blocks

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads
