"""A decoder-only (or, with a bidirectional objective, encoder-only) transformer.

token embedding → positional encoding → N pre-norm blocks → final norm → LM head. Every swappable
piece (attention backend, positional encoding, norm, MLP) comes from :class:`ModelParts`, factories the
core builds from the registries; this module never looks a plugin up itself.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from plugformer.interfaces import DecodeCache, KVCache, LayerKV, ModelDims, PositionEncoding, Positions, RaggedBatch


@dataclass
class ModelParts:
    """Factories for the swappable pieces, each called with the (per-layer) :class:`ModelDims`."""

    attention: Callable[[ModelDims], nn.Module]
    position: Callable[[ModelDims], PositionEncoding]
    norm: Callable[[ModelDims], nn.Module]
    mlp: Callable[[ModelDims], nn.Module]


class SelfAttention(nn.Module):
    """Projects to q/k/v heads, applies the position rotation and KV cache, calls the backend."""

    def __init__(self, dims: ModelDims, backend: nn.Module):
        super().__init__()
        self.dims = dims
        kv_width = dims.n_kv_heads * dims.head_dim
        self.qkv = nn.Linear(dims.d_model, dims.d_model + 2 * kv_width, bias=dims.bias)
        self.proj_out = nn.Linear(dims.d_model, dims.d_model, bias=dims.bias)
        self.backend = backend
        self.resid_drop = nn.Dropout(dims.dropout)

    def forward(self, x: Tensor, position: PositionEncoding, positions: Positions, bias: Tensor | None,
                cache: KVCache | LayerKV | None, offset: int | Tensor, kv_lengths: Tensor | None = None) -> Tensor:
        B, T, _ = x.shape
        H, Hkv, D = self.dims.n_heads, self.dims.n_kv_heads, self.dims.head_dim  # this module's heads
        # (B, T, heads, D) → (B, heads, T, D), then q/k/v heads apart: three ops, not seven (decoding is per-op bound)
        q, k, v = self.qkv(x).view(B, T, H + 2 * Hkv, D).transpose(1, 2).split([H, Hkv, Hkv], dim=1)
        q, k = position.rotate(q, k, positions)
        if cache is not None:
            k, v = cache.update(k, v, offset)
        ragged = {} if kv_lengths is None else {"kv_lengths": kv_lengths}  # API 1.0 backends never see it
        y = self.backend(q, k, v, causal=self.dims.causal, attn_bias=self.head_bias(bias), q_offset=offset, **ragged)
        out = self.proj_out(y.transpose(1, 2).reshape(B, T, H * D))
        return self.resid_drop(out) if self.training else out  # dropout is the identity in eval: skip the call

    def head_bias(self, bias: Tensor | None) -> Tensor | None:
        """The attention bias for this module's heads (all of them here; a tensor-parallel shard slices)."""
        return bias


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dims: ModelDims, parts: ModelParts):
        super().__init__()
        self.norm_attn = parts.norm(dims)
        self.attn = SelfAttention(dims, parts.attention(dims))
        self.norm_mlp = parts.norm(dims)
        self.mlp = parts.mlp(dims)

    def forward(self, x: Tensor, position: PositionEncoding, positions: Positions, bias: Tensor | None,
                cache: KVCache | LayerKV | None, offset: int | Tensor, kv_lengths: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm_attn(x), position, positions, bias, cache, offset, kv_lengths)
        return x + self.mlp(self.norm_mlp(x))


class Transformer(nn.Module):
    """The language model. ``forward(tokens, cache=None) -> logits`` of shape (B, T, vocab_size)."""

    def __init__(self, dims: ModelDims, n_layers: int, parts: ModelParts, tie_embeddings: bool = True,
                 init_std: float = 0.02):
        super().__init__()
        self.dims, self.n_layers = dims, n_layers
        self.tok_emb = nn.Embedding(dims.vocab_size, dims.d_model)
        self.position = parts.position(dims)
        self.drop = nn.Dropout(dims.dropout)
        self.blocks = nn.ModuleList(Block(replace(dims, layer=i), parts) for i in range(n_layers))
        self.norm_f = parts.norm(replace(dims, layer=-1))
        self.lm_head = nn.Linear(dims.d_model, dims.vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        self._init_weights(init_std)

    def _init_weights(self, std: float) -> None:
        """GPT-2 init: N(0, std) weights, zero biases, residual projections scaled by 1/√(2·layers)."""
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                scale = 1 / math.sqrt(2 * self.n_layers) if name.endswith("proj_out") else 1.0
                nn.init.normal_(module.weight, mean=0.0, std=std * scale)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor, cache: DecodeCache | RaggedBatch | None = None,
                padding_mask: Tensor | None = None, logits_at: Tensor | None = None) -> Tensor:
        """``tokens`` (B, T) → logits (B, T, vocab). ``padding_mask`` (B, past+T) bool marks real tokens
        (False: padding no query may attend to).

        ``cache`` is a :class:`DecodeCache` (every row at the same position, ``cache.length`` tokens
        cached) or a :class:`RaggedBatch` (the inference engine: rows at their own positions, see
        :mod:`plugformer.engine`). ``logits_at`` (int64 indices into the flattened ``B·T`` positions)
        computes logits only there and returns them as (N, vocab): the engine needs one row per sequence,
        not the whole prompt's."""
        T = tokens.shape[1]
        if isinstance(cache, RaggedBatch):
            if cache.uniform_offset is not None:  # every row at one position: the single-sequence form
                offset, kv_lengths = cache.uniform_offset, None
                positions = Positions(offset, T, tokens.device)
            else:
                offset, kv_lengths, positions = cache.q_offsets, cache.kv_lengths, cache.positions
            key_positions = Positions(0, cache.max_kv, tokens.device)
            layer_caches: list = list(cache.layers)
        else:
            offset, kv_lengths = (cache.length if cache is not None else 0), None
            positions = Positions(offset, T, tokens.device)
            key_positions = Positions(0, offset + T, tokens.device) if offset else positions
            layer_caches = cache.layers if cache is not None else [None] * len(self.blocks)
        # always called, even where it is the identity: parallel strategies hook it (tp scatters the sequence)
        x = self.drop(self.position.embed(self.tok_emb(tokens), positions))
        bias = self.position.attention_bias(positions, key_positions)
        if padding_mask is not None:
            pad = torch.zeros(padding_mask.shape, device=tokens.device).masked_fill(~padding_mask, float("-inf"))
            bias = pad[:, None, None, :] if bias is None else bias + pad[:, None, None, :]
        for block, layer_cache in zip(self.blocks, layer_caches):
            x = block(x, self.position, positions, bias, layer_cache, offset, kv_lengths)
        if isinstance(cache, DecodeCache):
            cache.length += T
        if logits_at is not None:
            x = x.reshape(-1, x.shape[-1]).index_select(0, logits_at)
        return self.lm_head(self.norm_f(x))

    def hidden_states(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """``tokens`` (B, T) → the final-norm hidden states (B, T, d_model) of a full, uncached pass (what the
        LM head reads): embedders pool them. Differentiable; runs :meth:`forward` (so hooks, adapters and
        quantized layers apply) with the LM head on one position only."""
        captured: list[Tensor] = []
        handle = self.blocks[-1].register_forward_hook(lambda _module, _args, out: captured.append(out))
        try:
            self.forward(tokens, padding_mask=padding_mask,
                         logits_at=torch.zeros(1, dtype=torch.long, device=tokens.device))
        finally:
            handle.remove()
        return self.norm_f(captured[-1])

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None) -> DecodeCache:
        """An empty :class:`DecodeCache` for incremental decoding of up to ``max_len`` positions."""
        p = self.tok_emb.weight
        return DecodeCache([KVCache(batch, self.dims.n_kv_heads, max_len, self.dims.head_dim, p.device,
                                    dtype or p.dtype) for _ in range(self.n_layers)])

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
