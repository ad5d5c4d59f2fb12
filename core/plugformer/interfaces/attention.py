"""Attention backends and the KV-cache protocol they honour."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from plugformer.interfaces.dims import ModelDims


class Attention(nn.Module, ABC):
    """An attention kernel: softmax(q kᵀ / √d + bias) v over already-projected heads (backends declaring
    the ``exact_softmax`` capability compute exactly this; variants such as cosine or differential
    attention weight the values their own way but keep every rule below).

    Construction: ``Cls(config, dims)``: ``config`` is the entry's schema instance (or None),
    ``dims`` a :class:`ModelDims`. Projections, rotary embeddings and the cache live in the core's
    ``SelfAttention``; a backend only combines heads.

    ``forward(q, k, v, *, causal, attn_bias=None, q_offset=0[, kv_lengths=None]) -> Tensor``

    - ``q``: (B, H, Tq, D); ``k``, ``v``: (B, Hkv, Tk, D) with ``H % Hkv == 0``. When Hkv < H
      (grouped-query/multi-query attention) query head ``h`` reads kv head ``h // (H // Hkv)``.
    - any floating dtype (fp32, bf16, fp16); the result has q's dtype and shape (B, H, Tq, D).
    - ``causal``: query ``i`` sits at absolute position ``q_offset + i`` and may attend key ``j`` iff
      ``j <= q_offset + i``. With ``causal=False`` every query sees every key (encoders).
    - ``attn_bias``: optional additive float tensor broadcastable to (B, H, Tq, Tk), added to the
      scaled scores before softmax (ALiBi slopes, ``-inf`` for padded keys).
    - **KV-cache protocol**: in training ``Tq == Tk`` and ``q_offset == 0``. While decoding, the core
      appends the new keys/values to the layer's :class:`KVCache` and calls the backend with all cached
      keys (``Tk = past + Tq``) and ``q_offset = past``; the backend must mask relative to that offset.
    - attention-weight dropout (``dims.dropout``) applies only when ``self.training``.
    - **sliding window** (backends declaring the ``sliding_window`` capability): a schema field
      ``window: Optional[int]``; when set, query at absolute position ``p`` also needs
      ``p - j < window`` to see key ``j`` (itself and the ``window - 1`` keys before it), on top of the
      causal rule; with ``causal=False`` the window is symmetric: ``|p - j| < window``.
    - **padding**: padded keys arrive as ``-inf`` entries of ``attn_bias`` (shape (B, 1, 1, Tk) or
      broadcastable); a backend declaring ``padding_mask`` must give real queries the same output as
      if the padded keys were absent.
    - **ragged batches** (plugin API 1.1; backends declaring the ``ragged`` capability): the inference
      engine decodes rows that sit at different positions in one call. ``q_offset`` is then an int64
      tensor of shape (B,): row ``b``'s query ``i`` sits at position ``q_offset[b] + i``, and every rule
      above (causal, window) applies per row. The backend also receives ``kv_lengths``, an int64 (B,)
      tensor: row ``b`` holds ``kv_lengths[b]`` real keys (positions ``0 .. kv_lengths[b]-1``) and the
      keys after them are padding that no query may see. Queries past a row's real length (padding)
      may return anything finite. The core passes ``kv_lengths`` only for ragged batches, so a backend
      written for API 1.0 (no such parameter) keeps working for training and single-sequence decoding;
      the engine refuses it by name.
    """

    def __init__(self, config: Any, dims: ModelDims):
        super().__init__()
        self.config, self.dims = config, dims

    @abstractmethod
    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                attn_bias: Tensor | None = None, q_offset: int | Tensor = 0) -> Tensor:
        """Return the attention output, (B, H, Tq, D). Backends declaring ``ragged`` also accept
        ``kv_lengths: Tensor | None = None`` (see the class docstring)."""


def causal_mask(tq: int, tk: int, q_offset: int, device: torch.device | str) -> Tensor:
    """Boolean (Tq, Tk) mask, True where query ``i`` may see key ``j`` (``j <= q_offset + i``)."""
    q_pos = torch.arange(tq, device=device).unsqueeze(1) + q_offset
    return torch.arange(tk, device=device).unsqueeze(0) <= q_pos


class KVCache:
    """Keys and values of one layer for incremental decoding, preallocated to ``max_len``.

    The core owns the cache: ``update(k, v, start)`` writes the new (B, Hkv, T, D) keys and values at
    positions ``start .. start+T`` and returns everything cached so far, which the backend receives.
    """

    def __init__(self, batch: int, n_kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device | str, dtype: torch.dtype):
        shape = (batch, n_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)

    def update(self, k: Tensor, v: Tensor, start: int) -> tuple[Tensor, Tensor]:
        end = start + k.shape[2]
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache full: position {end} exceeds max_len {self.k.shape[2]}")
        self.k[:, :, start:end] = k.to(self.k.dtype)
        self.v[:, :, start:end] = v.to(self.v.dtype)
        return self.k[:, :, :end], self.v[:, :, :end]


class DecodeCache:
    """All layers' :class:`KVCache` plus how many positions are filled (``length``)."""

    def __init__(self, layers: list[KVCache]):
        self.layers = layers
        self.length = 0

    def reorder(self, index: Tensor) -> None:
        """Keep, for each new batch row ``i``, the cached keys and values of row ``index[i]`` (beam search
        follows its surviving beams this way; an index longer than the batch also grows it, e.g. one
        prefilled prompt copied to every beam)."""
        for layer in self.layers:
            layer.k = layer.k.index_select(0, index.to(layer.k.device))
            layer.v = layer.v.index_select(0, index.to(layer.v.device))


class LayerKV(Protocol):
    """One layer's view of a :class:`RaggedBatch`: stores the new keys/values of the batch and returns
    every row's keys and values so far."""

    def update(self, k: Tensor, v: Tensor, offset: Tensor) -> tuple[Tensor, Tensor]:
        """``k``, ``v``: (B, Hkv, T, D) for the batch's queries → all keys and values, (B, Hkv, Tk, D),
        row ``b`` holding its first ``kv_lengths[b]`` entries for real."""


class RaggedBatch(ABC):
    """What a forward pass over a ragged batch needs from its cache: rows at different positions
    holding different numbers of cached tokens (the inference engine's paged cache implements it).

    ``Transformer.forward(tokens, cache=batch)`` reads :attr:`positions` (the queries' per-row positions),
    :attr:`q_offsets`, :attr:`kv_lengths` and :attr:`max_kv`, calls ``layers[i].update`` in each layer
    and hands the backend ``q_offset=q_offsets`` and ``kv_lengths``. Rows are padded on the right:
    row ``b`` has ``q_lengths[b]`` real tokens of the ``T`` in ``tokens``.
    """

    #: per-row positions of the queries (a ragged :class:`~plugformer.interfaces.Positions`)
    positions: Any
    #: (B,) int64: the position of each row's first query (its number of tokens already cached)
    q_offsets: Tensor
    #: (B,) int64: each row's number of real keys after this pass (``q_offsets + q_lengths``)
    kv_lengths: Tensor
    #: the longest row's key count (a host int): the ``Tk`` of the keys the layers return
    max_kv: int
    #: one :class:`LayerKV` per transformer block
    layers: Sequence[LayerKV]
    #: set (a host int) when the batch is not ragged after all: every row's queries start at this position,
    #: every row computes all ``T`` queries and has every key real (a batch of one sequence, or rows in
    #: step). The model then hands the backends the single-sequence form (``q_offset``
    #: this int, no ``kv_lengths``: no mask to build, the kernels' fast paths) and uniform positions.
    uniform_offset: int | None = None
