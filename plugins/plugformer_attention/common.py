"""Helpers shared by the attention backends."""
from __future__ import annotations

from torch import Tensor


def kv_groups(q: Tensor, k: Tensor) -> int:
    """How many query heads share one kv head (1 for plain multi-head attention)."""
    n_heads, n_kv_heads = q.shape[1], k.shape[1]
    if n_heads % n_kv_heads:
        raise ValueError(f"attention: n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
    return n_heads // n_kv_heads


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, Hkv, T, D) → (B, Hkv·groups, T, D) so query head ``h`` reads kv head ``h // groups``."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)
