"""Helpers shared by the attention backends."""
from __future__ import annotations

import torch
from torch import Tensor

from plugformer_attention.schemas import check_window


def kv_groups(q: Tensor, k: Tensor) -> int:
    """How many query heads share one kv head (1 for plain multi-head attention)."""
    n_heads, n_kv_heads = q.shape[1], k.shape[1]
    if n_heads % n_kv_heads:
        raise ValueError(f"attention: n_heads ({n_heads}) must be a multiple of n_kv_heads ({n_kv_heads})")
    return n_heads // n_kv_heads


def repeat_kv(x: Tensor, groups: int) -> Tensor:
    """(B, Hkv, T, D) → (B, Hkv·groups, T, D) so query head ``h`` reads kv head ``h // groups``."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=1)


def window_of(config: object) -> int | None:
    """The validated ``window`` of a backend's schema instance (None when there is no config)."""
    return check_window(getattr(config, "window", None))


def window_restricts(tq: int, tk: int, q_offset: int, *, causal: bool, window: int | None) -> bool:
    """Whether ``window`` hides any key from any query (decided from ints, no device work)."""
    if window is None:
        return False
    first, last = q_offset, q_offset + tq - 1
    farthest = last if causal else max(last, tk - 1 - first)  # the largest |position - key| in play
    return farthest >= window


def causal_restricts(tk: int, q_offset: int, *, causal: bool) -> bool:
    """Whether the causal rule hides any key: false once the first query already sees the last key."""
    return causal and q_offset < tk - 1


def is_ragged(q_offset: int | Tensor, kv_lengths: Tensor | None) -> bool:
    """Whether a call carries a ragged batch (plugin API 1.1): per-row offsets or key lengths. Plain int
    offsets without ``kv_lengths`` keep the uniform fast paths."""
    return kv_lengths is not None or isinstance(q_offset, Tensor)


def ragged_visibility(batch: int, tq: int, tk: int, q_offset: int | Tensor, kv_lengths: Tensor | None, *,
                      causal: bool, window: int | None, device: torch.device | str) -> Tensor | None:
    """Boolean (B, 1, Tq, Tk) mask of a ragged batch, True where row ``b``'s query ``i`` (at position
    ``q_offset[b] + i``) may see key ``j``: the causal rule and the window per row, and keys
    ``j >= kv_lengths[b]`` (padding) hidden. None when nothing is hidden (bidirectional, no window,
    no lengths).

    A few vectorised ops, no loop over rows, no device synchronisation (the engine's decode step): the
    keys a query may read form a range ``low .. high`` (``low`` only with a window), computed per (row,
    query) and compared once with the key indices. A query that would see no key at all (a padding query
    past its row's keys, or an empty row) is given keys ``0 .. high`` instead (at least key 0), so its output
    stays finite: the contract lets padding queries return anything finite, and a row of only ``-inf``
    scores would turn into NaN.
    """
    if not causal and window is None and kv_lengths is None:
        return None
    keys = torch.arange(tk, device=device)
    queries = torch.as_tensor(q_offset, device=device).reshape(-1, 1) + torch.arange(tq, device=device)  # (B|1, Tq)
    if causal:
        high = queries
    else:
        high = queries + (window - 1) if window is not None else torch.full_like(queries, tk - 1)
    if kv_lengths is not None:  # keys past the row's length are padding
        high = torch.minimum(high, kv_lengths.to(device).reshape(-1, 1) - 1)
    high = high.clamp_min(0)  # an empty row still reads key 0
    mask = keys <= high.unsqueeze(-1)  # (B|1, Tq, Tk)
    if window is not None:
        low = queries - (window - 1)
        low = torch.where(low > high, 0, low)  # a padding query whose window holds no real key: 0 .. high
        mask = mask & (keys >= low.unsqueeze(-1))
    return mask.expand(batch, tq, tk).unsqueeze(1)


def visibility(tq: int, tk: int, q_offset: int, *, causal: bool, window: int | None,
               device: torch.device | str) -> Tensor | None:
    """Boolean (Tq, Tk) mask, True where query ``i`` (at position ``q_offset + i``) may see key ``j``.

    Combines the causal rule and the sliding window of the ``Attention`` contract; None means every
    query sees every key, so callers can skip masking (and keep fused kernels' fast paths).
    """
    if not (causal_restricts(tk, q_offset, causal=causal)
            or window_restricts(tq, tk, q_offset, causal=causal, window=window)):
        return None
    distance = (torch.arange(tq, device=device).unsqueeze(1) + q_offset) - torch.arange(tk, device=device)
    if not causal:
        return distance.abs() < window  # only reached when a window is set
    mask = distance >= 0
    return mask if window is None else mask & (distance < window)
