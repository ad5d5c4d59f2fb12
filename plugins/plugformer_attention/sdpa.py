"""Attention through ``torch.nn.functional.scaled_dot_product_attention``.

PyTorch dispatches to the fastest kernel that accepts the inputs (flash and memory-efficient
attention on GPUs, a fused math kernel on CPU). Flash attention only takes ``is_causal`` and no
explicit mask, so this backend passes a mask only when the offset or a bias makes one necessary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from plugformer.interfaces import Attention, ModelDims, causal_mask
from plugformer_attention.common import kv_groups, repeat_kv
from plugformer_attention.schemas import SdpaAttentionConfig

#: ``enable_gqa`` (kv heads broadcast inside the kernel, no copy) arrived in torch 2.5
HAS_ENABLE_GQA = torch.__version__ >= "2.5"


def build_mask(q: Tensor, tk: int, *, causal: bool, attn_bias: Tensor | None,
               q_offset: int) -> tuple[Tensor | None, bool]:
    """(attn_mask, is_causal) for SDPA: the cheapest form that means the same as the contract.

    ``is_causal=True`` in SDPA aligns the mask to the top-left corner, which is only right when
    queries and keys start together; with a cache offset the mask must be built explicitly.
    """
    tq = q.shape[2]
    # the first query already sees every key (e.g. one new token after `past` cached ones)
    sees_all = q_offset >= tk - 1
    needs_causal = causal and not sees_all
    if attn_bias is None:
        if not needs_causal:
            return None, False
        if tq == tk and q_offset == 0:
            return None, True  # fast path: flash attention's own causal masking
        return causal_mask(tq, tk, q_offset, q.device), False
    bias = attn_bias.to(q.dtype)
    if needs_causal:
        bias = bias.masked_fill(~causal_mask(tq, tk, q_offset, q.device), float("-inf"))
    return bias, False


class SdpaAttention(Attention):
    """Fused scaled-dot-product attention; same contract and results as ``naive``, much faster."""

    def __init__(self, config: SdpaAttentionConfig | None, dims: ModelDims):
        super().__init__(config, dims)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, causal: bool,
                attn_bias: Tensor | None = None, q_offset: int = 0) -> Tensor:
        groups = kv_groups(q, k)
        mask, is_causal = build_mask(q, k.shape[2], causal=causal, attn_bias=attn_bias, q_offset=q_offset)
        dropout_p = self.dims.dropout if self.training else 0.0
        extra = {}
        if groups > 1:
            if HAS_ENABLE_GQA:
                extra["enable_gqa"] = True
            else:
                k, v = repeat_kv(k, groups), repeat_kv(v, groups)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                             is_causal=is_causal, **extra)
        return out.to(q.dtype)
