"""Attention through xformers' ``memory_efficient_attention`` (CUDA only).

xformers describes common masks as small bias *objects* rather than dense tensors, so the kernel can
skip masked blocks instead of reading a (B, H, Tq, Tk) tensor from memory. This backend uses them
whenever one means exactly what the ``Attention`` contract asks for:

- causal, ``q_offset == 0``: ``LowerTriangularMask`` (aligned to the top-left corner);
- causal, keys = cache + queries (``q_offset == Tk - Tq``): ``LowerTriangularFromBottomRightMask``;
- sliding windows with the same alignment: ``LowerTriangularFromBottomRightLocalAttentionMask``
  (causal) and ``LocalAttentionFromBottomRightMask`` (bidirectional);

and falls back to a dense additive tensor (built from the same visibility rule as ``naive``) for
anything else: an explicit ``attn_bias``, other offsets, or an xformers version lacking the class.
Ragged batches (per-row ``q_offset`` and ``kv_lengths``, plugin API 1.1) always take the dense path: a
(B, H, Tq, Tk) tensor from the same per-row mask as ``naive`` and ``sdpa``. xformers' own padded-key
classes (``BlockDiagonalCausalWithOffsetPaddedKeysMask``) want the row lengths as host lists, i.e. a
device synchronisation every step, and a packed query layout, so they are not used here.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from plugformer.interfaces import Attention, ModelDims
from plugformer_attention.common import (causal_restricts, is_ragged, kv_groups, ragged_visibility, repeat_kv,
                                         visibility, window_of, window_restricts)
from plugformer_attention.schemas import SdpaAttentionConfig, XformersAttentionConfig
from plugformer_attention.xformers_check import NO_CUDA, NOT_INSTALLED, availability

__all__ = ["NOT_INSTALLED", "NO_CUDA", "XformersAttention", "availability", "dense_bias"]

#: the fallback warning is given once per process, not once per layer
_FALLBACK_WARNED = False


def _fallback_name(config: XformersAttentionConfig) -> str | None:
    """The configured fallback as a plain string (OmegaConf may hand over the enum or its value)."""
    fallback = config.fallback
    return None if fallback is None else str(getattr(fallback, "value", fallback))


def _aligned(bias: Tensor, shape: tuple[int, int, int, int], dtype: torch.dtype) -> Tensor:
    """``bias`` expanded to (B, H, Tq, Tk) in ``dtype``, stored with its last dim padded to 8.

    xformers' kernels read the bias in aligned rows; slicing a padded buffer keeps that alignment.
    """
    tk = shape[-1]
    buffer = torch.empty(*shape[:-1], (tk + 7) // 8 * 8, dtype=dtype, device=bias.device)
    out = buffer[..., :tk]
    out.copy_(bias.expand(shape))
    return out


def dense_bias(attn_bias: Tensor | None, shape: tuple[int, int, int, int], q_offset: int | Tensor, *, causal: bool,
               window: int | None, dtype: torch.dtype, device: torch.device | str,
               kv_lengths: Tensor | None = None) -> Tensor:
    """The whole mask as one aligned (B, H, Tq, Tk) additive tensor: ``attn_bias`` plus ``-inf`` where
    the causal rule or the window hides a key (per row for a ragged batch, padded keys past
    ``kv_lengths`` too). Used when no xformers bias class fits."""
    tq, tk = shape[-2:]
    bias = torch.zeros((), dtype=dtype, device=device) if attn_bias is None else attn_bias.to(dtype)
    if is_ragged(q_offset, kv_lengths):
        visible = ragged_visibility(shape[0], tq, tk, q_offset, kv_lengths, causal=causal, window=window,
                                    device=device)
    else:
        visible = visibility(tq, tk, q_offset, causal=causal, window=window, device=device)
    if visible is not None:
        bias = torch.where(visible, bias, torch.tensor(float("-inf"), dtype=dtype, device=device))
    return _aligned(bias, shape, dtype)


def _structured_bias(fmha_bias: Any, tq: int, tk: int, q_offset: int, *, causal: bool,
                     window: int | None) -> tuple[bool, Any]:
    """(found, bias object or None) for masks xformers expresses without a tensor.

    ``found`` is False when no class in the installed xformers means exactly the contract's mask.
    """
    if not window_restricts(tq, tk, q_offset, causal=causal, window=window):
        window = None  # wider than anything in play: only the causal rule can still hide keys
        if not causal_restricts(tk, q_offset, causal=causal):
            return True, None
    bottom_right = q_offset == tk - tq  # the last query sits on the last key: the KV-cache protocol
    if window is None:  # only the causal rule restricts here
        if q_offset == 0 and hasattr(fmha_bias, "LowerTriangularMask"):
            return True, fmha_bias.LowerTriangularMask()
        if bottom_right and hasattr(fmha_bias, "LowerTriangularFromBottomRightMask"):
            return True, fmha_bias.LowerTriangularFromBottomRightMask()
        return False, None
    if not bottom_right:
        return False, None
    if causal and hasattr(fmha_bias, "LowerTriangularFromBottomRightLocalAttentionMask"):
        return True, fmha_bias.LowerTriangularFromBottomRightLocalAttentionMask(window)
    if not causal and hasattr(fmha_bias, "LocalAttentionFromBottomRightMask"):
        return True, fmha_bias.LocalAttentionFromBottomRightMask(window_left=window - 1, window_right=window - 1)
    return False, None


class XformersAttention(Attention):
    """``xformers.ops.memory_efficient_attention``, with the same contract and results as ``naive``.

    Inputs are converted to xformers' (B, T, H, D) layout; grouped-query attention expands the kv
    heads to one per query head (xformers' 4-D API takes equal head counts).

    **Fallback.** xformers needs CUDA and an install matching torch. Built where it cannot run, this
    backend raises a ``ValueError`` giving the reason, unless the config says ``fallback: sdpa``: then
    it computes attention with torch's ``scaled_dot_product_attention`` (the ``sdpa`` backend, same
    ``window``) and says so once per process with ``warnings.warn``. The fallback is explicit so a
    run never silently loses the kernel it asked for.
    """

    def __init__(self, config: XformersAttentionConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        config = config or XformersAttentionConfig()
        self.window = window_of(config)
        fallback = _fallback_name(config)
        if fallback not in (None, "sdpa"):
            raise ValueError(f"attention.fallback must be 'sdpa' or null, got {fallback!r}")
        self.fallback: Attention | None = None
        ok, reason = availability()
        if ok:
            return
        if fallback is None:
            raise ValueError(f"attention 'xformers' cannot run here: {reason}; set attention.fallback=sdpa "
                             "to use torch SDPA instead, or choose attention=sdpa")
        from plugformer_attention.sdpa import SdpaAttention

        self.fallback = SdpaAttention(SdpaAttentionConfig(window=self.window), dims)
        global _FALLBACK_WARNED
        if not _FALLBACK_WARNED:
            _FALLBACK_WARNED = True
            warnings.warn(f"attention 'xformers' is unavailable ({reason}); using torch SDPA instead, "
                          "as configured by attention.fallback=sdpa", stacklevel=2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                attn_bias: Tensor | None = None, q_offset: int | Tensor = 0,
                kv_lengths: Tensor | None = None) -> Tensor:
        if self.fallback is not None:
            return self.fallback(q, k, v, causal=causal, attn_bias=attn_bias, q_offset=q_offset,
                                 kv_lengths=kv_lengths)
        from xformers.ops import fmha, memory_efficient_attention

        groups = kv_groups(q, k)
        k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        b, h, tq, _ = q.shape
        tk = k.shape[2]
        bias: Any = None
        found = False
        ragged = is_ragged(q_offset, kv_lengths)
        if attn_bias is None and not ragged:
            found, bias = _structured_bias(fmha.attn_bias, tq, tk, q_offset, causal=causal, window=self.window)
        if not found:
            bias = dense_bias(attn_bias, (b, h, tq, tk), q_offset, causal=causal, window=self.window,
                              dtype=q.dtype, device=q.device, kv_lengths=kv_lengths)
        dropout_p = self.dims.dropout if self.training else 0.0
        out = memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_bias=bias, p=dropout_p)
        return out.transpose(1, 2).to(q.dtype)
