"""Attention through ``torch.nn.functional.scaled_dot_product_attention``.

PyTorch dispatches to the fastest kernel that accepts the inputs (flash and memory-efficient
attention on GPUs, a fused math kernel on CPU). Flash attention only takes ``is_causal`` and no
explicit mask, so this backend passes a mask only when the offset, a window or a bias makes one
necessary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from plugformer.interfaces import Attention, ModelDims
from plugformer_attention.common import is_ragged, kv_groups, ragged_visibility, repeat_kv, visibility, window_of
from plugformer_attention.schemas import SdpaAttentionConfig

#: ``enable_gqa`` (kv heads broadcast inside the kernel, no copy) arrived in torch 2.5
HAS_ENABLE_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2] if p.isdigit()) >= (2, 5)


#: rows per SDPA call in a ragged decode pass on a CPU (one query per row): each group of rows reads keys
#: only up to its own longest row instead of the whole batch's
DECODE_ROW_GROUP = 8

#: the last ragged mask built: (q_offset, kv_lengths, their versions, the other arguments, mask)
_last_ragged: tuple = ()


def _same(a: int | Tensor | None, b: int | Tensor | None) -> bool:
    """The very same tensor object (or the same int): what one forward pass hands every layer."""
    return a is b if isinstance(a, Tensor) or isinstance(b, Tensor) else a == b


def _version(t: int | Tensor | None) -> int | None:
    return t._version if isinstance(t, Tensor) else None


def ragged_mask(batch: int, tq: int, tk: int, q_offset: int | Tensor, kv_lengths: Tensor | None, *, causal: bool,
                window: int | None, device: torch.device) -> Tensor | None:
    """:func:`ragged_visibility`, built once per forward pass instead of once per layer: every layer of a
    ragged pass receives the same ``q_offset`` and ``kv_lengths`` tensors, so the last mask is reused
    while the very same tensor objects come back unmodified (their in-place version counters unchanged)
    with the same shapes and rules."""
    global _last_ragged
    rules = (batch, tq, tk, causal, window, device)
    last = _last_ragged
    if (last and _same(last[0], q_offset) and _same(last[1], kv_lengths) and last[3] == rules
            and last[2] == (_version(q_offset), _version(kv_lengths))):
        return last[4]
    mask = ragged_visibility(batch, tq, tk, q_offset, kv_lengths, causal=causal, window=window, device=device)
    _last_ragged = (q_offset, kv_lengths, (_version(q_offset), _version(kv_lengths)), rules, mask)
    return mask


def build_mask(q: Tensor, tk: int, *, causal: bool, attn_bias: Tensor | None,
               q_offset: int | Tensor, window: int | None = None,
               kv_lengths: Tensor | None = None) -> tuple[Tensor | None, bool]:
    """(attn_mask, is_causal) for SDPA: the cheapest form that means the same as the contract.

    ``is_causal=True`` in SDPA aligns the mask to the top-left corner, which is only right when
    queries and keys start together and no window applies; otherwise the mask is built explicitly.
    A ragged batch (tensor ``q_offset`` or ``kv_lengths``) always gets an explicit per-row
    (B, 1, Tq, Tk) mask, boolean, or merged into the bias as ``-inf``.
    """
    tq = q.shape[2]
    if is_ragged(q_offset, kv_lengths):
        visible = ragged_mask(q.shape[0], tq, tk, q_offset, kv_lengths, causal=causal, window=window,
                              device=q.device)
        if attn_bias is None:
            return visible, False
        bias = attn_bias.to(q.dtype)
        if visible is not None:
            bias = torch.where(visible, bias, torch.tensor(float("-inf"), dtype=q.dtype, device=q.device))
        return bias, False
    visible = visibility(tq, tk, q_offset, causal=causal, window=window, device=q.device)
    if attn_bias is None:
        if visible is None:
            return None, False
        if window is None and tq == tk and q_offset == 0:
            return None, True  # fast path: flash attention's own causal masking
        return visible, False
    bias = attn_bias.to(q.dtype)
    if visible is not None:
        bias = bias.masked_fill(~visible, float("-inf"))
    return bias, False


def grouped_decode(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, kv_lengths: Tensor, *, dropout_p: float,
                   **extra: bool) -> Tensor:
    """SDPA over a ragged decode pass (one query per row) in groups of :data:`DECODE_ROW_GROUP` adjacent
    rows, each group's keys cut at its own longest row. Decoding on a CPU is bound by reading the cached
    keys and values, and one call over the batch reads every row up to the longest one; rows of similar
    length sit together in the engine's batches (it places sequences in order, and ``Engine.generate``
    submits the longest prompts first), so most of that padding is never read. Same result as one call:
    the keys cut off are hidden from every row of the group by ``mask``."""
    B = q.shape[0]
    lengths = kv_lengths.tolist()
    out = torch.empty_like(q)
    for start in range(0, B, DECODE_ROW_GROUP):
        stop = min(start + DECODE_ROW_GROUP, B)
        tk = max(1, max(lengths[start:stop]))
        rows = mask[start:stop] if mask.shape[0] == B else mask
        out[start:stop] = F.scaled_dot_product_attention(q[start:stop], k[start:stop, :, :tk], v[start:stop, :, :tk],
                                                         attn_mask=rows[..., :tk], dropout_p=dropout_p, **extra)
    return out


class SdpaAttention(Attention):
    """Fused scaled-dot-product attention; same contract and results as ``naive``, much faster."""

    def __init__(self, config: SdpaAttentionConfig | None, dims: ModelDims):
        super().__init__(config, dims)
        self.window = window_of(config)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                attn_bias: Tensor | None = None, q_offset: int | Tensor = 0,
                kv_lengths: Tensor | None = None) -> Tensor:
        groups = kv_groups(q, k)
        mask, is_causal = build_mask(q, k.shape[2], causal=causal, attn_bias=attn_bias, q_offset=q_offset,
                                     window=self.window, kv_lengths=kv_lengths)
        dropout_p = self.dims.dropout if self.training else 0.0
        extra = {}
        if groups > 1:
            if HAS_ENABLE_GQA:
                extra["enable_gqa"] = True
            else:
                k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        if (kv_lengths is not None and mask is not None and q.shape[2] == 1 and q.shape[0] > DECODE_ROW_GROUP
                and q.device.type == "cpu"):
            return grouped_decode(q, k, v, mask, kv_lengths, dropout_p=dropout_p, **extra).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                             is_causal=is_causal, **extra)
        return out.to(q.dtype)
