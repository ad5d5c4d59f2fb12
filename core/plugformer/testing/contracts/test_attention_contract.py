"""Attention contract: self-consistency properties every backend must have, and "equals the reference"
for backends that declare they compute exact softmax attention.

Any attention variant (cosine-similarity attention, talking heads, differential attention...) computes
its own weighting of the values, so the kit cannot compare it with softmax(q kᵀ/√D + bias) v. What every
backend must still honour, each case selected by the capability it declares, is checked against the
backend itself:

- output shape, dtype, device and finiteness; each declared dtype close to the backend's own float32 output;
- **causality** (``causal``): a query's output ignores later keys, and later queries do see them;
- **all keys** (``bidirectional``): with ``causal=False`` the first query sees the last key;
- **batch-row independence**: each row's output is the one it gets alone;
- **additive biases** (``attention_bias``): every broadcastable shape acts as its expanded form, a zero
  bias is no bias, and a nonzero bias changes the output;
- **padding invariance** (``padding_mask``): real queries get what they get with the padded keys removed;
- **GQA head mapping** (``gqa``): query head ``h`` reads kv head ``h // (H / Hkv)``, i.e. the output
  equals the backend's own with each kv head repeated;
- **sliding windows** (``sliding_window``): keys outside the window do not matter, keys inside do;
- **KV-cache decoding** (``kv_cache``): prefill plus incremental steps equal the full forward;
- **ragged batches** (``ragged``, plugin API 1.1): rows at their own positions (a (B,) ``q_offset`` tensor)
  with their own numbers of real keys (``kv_lengths``): each row equals that row computed alone with an int
  offset and only its real keys; neither the other rows, their order, nor the padding keys' values or count
  change it; padding queries stay finite;
- dropout only while training; gradients reach q, k and v.

Backends declaring ``exact_softmax`` (naive, sdpa, xformers) are also compared with the reference: the
registered ``naive`` backend (when it declares ``exact_softmax`` and the case), else the kit's float64
:func:`~plugformer.testing.reference.attention_formula`. Tolerances: :data:`~plugformer.testing.reference.TOLERANCES`.
Each case runs on every declared device present here.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from plugformer.interfaces import KVCache
from plugformer.registry import Entry
from plugformer.testing.construct import build, devices, dtypes, label, randn, registries, tiny_dims
from plugformer.testing.reference import as_reference, assert_close, attention_formula, visible
from plugformer.testing.selection import skip_reason

contract = pytest.mark.plugformer_contract
B, T = 2, 9

#: the smallest change (max absolute difference) that counts as "the output changed" when a property says
#: an input must matter (a later key for a later query, a bias, a key inside the window); the kit's inputs
#: are standard-normal, so a backend that reads the input moves its output by far more than this
MUST_CHANGE = 1e-3


def modes(entry: Entry) -> list[bool]:
    """The ``causal`` values the entry declares it honours (True: causal, False: bidirectional)."""
    found = [c for c, key in ((True, "causal"), (False, "bidirectional")) if entry.capabilities.get(key)]
    if not found:
        pytest.skip(f"attention '{entry.name}' declares neither causal nor bidirectional")
    return found


def backend(entry: Entry, device: str, dims: Any = None, **options: Any) -> Any:
    """The entry built from its schema defaults plus ``options``, on ``device``, in eval mode."""
    return build(entry, dims or tiny_dims(), **options).to(device).eval()


def reference(entry: Entry, device: str, dims: Any = None, **options: Any) -> Any:
    """The registered ``naive`` backend with the same options, when it declares exact softmax attention and
    the case; the float64 formula where it cannot serve (and for ``naive`` itself)."""
    naive = registries().attention.get("naive") if "naive" in registries().attention else None
    usable = (naive is not None and entry.name != "naive" and naive.capabilities.get("exact_softmax")
              and skip_reason(naive, True) is None
              and device in naive.capabilities.get("devices", ["cpu"])
              and (options.get("window") is None or naive.capabilities.get("sliding_window")))
    if usable:
        return backend(naive, device, dims, **options)
    return as_reference(attention_formula, options.get("window"))


def qkv(device: str, *, tq: int = T, tk: int = T, heads: int = 4, kv_heads: int = 4, seed: int = 0,
        dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (B, H, Tq, 8) queries and (B, Hkv, Tk, 8) keys and values."""
    return (randn(B, heads, tq, 8, seed=seed, device=device, dtype=dtype),
            randn(B, kv_heads, tk, 8, seed=seed + 1, device=device, dtype=dtype),
            randn(B, kv_heads, tk, 8, seed=seed + 2, device=device, dtype=dtype))


def assert_changes(after: torch.Tensor, before: torch.Tensor, what: str) -> None:
    """``after`` differs from ``before`` by more than :data:`MUST_CHANGE` somewhere."""
    change = float((after.float() - before.float()).abs().max())
    assert change > MUST_CHANGE, f"{what} (largest change {change:.2e})"


def replaced(t: torch.Tensor, index: Any, seed: int) -> torch.Tensor:
    """A copy of ``t`` with ``t[:, :, index]`` replaced by other random values."""
    out = t.clone()
    out[:, :, index] = randn(*out[:, :, index].shape, seed=seed, device=str(t.device), dtype=t.dtype)
    return out


# -- self-consistency: every backend ----------------------------------------------------------------
@contract("attention")
def test_output_shape_and_dtype(entry: Entry) -> None:
    causal = entry.capabilities.get("causal", not entry.capabilities.get("bidirectional"))
    for device in devices(entry):
        for dtype in dtypes(entry):
            q, k, v = qkv(device, dtype=dtype)
            out = backend(entry, device)(q, k, v, causal=causal)
            what = label(entry, device=device, dtype=dtype)
            assert out.shape == q.shape, f"{what}: output shape {tuple(out.shape)}, expected {tuple(q.shape)}"
            assert out.dtype == dtype, f"{what}: output dtype {out.dtype}, expected q's dtype {dtype}"
            assert out.device.type == device, f"{what}: output on {out.device}, inputs on {device}"
            assert torch.isfinite(out).all(), f"{what}: non-finite output"


@contract("attention")
def test_each_declared_dtype_agrees_with_float32(entry: Entry) -> None:
    """Lower precisions compute the same function: close to the backend's own float32 output."""
    for device in devices(entry):
        for dtype in dtypes(entry):
            for causal in modes(entry):
                q, k, v = qkv(device, dtype=dtype)
                attn = backend(entry, device)
                out = attn(q, k, v, causal=causal)
                expected = attn(q.float(), k.float(), v.float(), causal=causal)
                assert_close(out, expected, f"{label(entry, device=device, dtype=dtype, causal=causal)}: "
                             "vs its own float32 output", dtype)


@contract("attention", needs=("causal",))
def test_causal_queries_ignore_later_keys(entry: Entry) -> None:
    """Query ``i`` depends only on keys ``j <= i``: replacing the keys and values after position ``t``
    leaves outputs ``0..t`` unchanged and changes the later ones."""
    for device in devices(entry):
        attn = backend(entry, device)
        q, k, v = qkv(device, seed=3)
        out = attn(q, k, v, causal=True)
        for t in (0, 4, T - 2):
            later = slice(t + 1, T)
            changed = attn(q, replaced(k, later, 30 + t), replaced(v, later, 40 + t), causal=True)
            what = label(entry, device=device, causal=True, changed_keys=f"{t + 1}..{T - 1}")
            assert_close(changed[:, :, :t + 1], out[:, :, :t + 1], f"{what}: queries 0..{t} see later keys")
            assert_changes(changed[:, :, t + 1:], out[:, :, t + 1:], f"{what}: later queries ignore their own keys")


@contract("attention", needs=("bidirectional",))
def test_bidirectional_queries_see_every_key(entry: Entry) -> None:
    """With ``causal=False`` the first query reads the last key (nothing is masked)."""
    for device in devices(entry):
        attn = backend(entry, device)
        q, k, v = qkv(device, seed=4)
        out = attn(q, k, v, causal=False)
        changed = attn(q, replaced(k, slice(T - 1, T), 50), replaced(v, slice(T - 1, T), 51), causal=False)
        assert_changes(changed[:, :, 0], out[:, :, 0],
                       f"{label(entry, device=device, causal=False)}: query 0 ignores the last key")


@contract("attention")
def test_batch_rows_are_independent(entry: Entry) -> None:
    """Each row of a batch gets the output it gets alone: nothing mixes sequences."""
    for device in devices(entry):
        attn = backend(entry, device)
        for causal in modes(entry):
            q, k, v = qkv(device, seed=15)
            out = attn(q, k, v, causal=causal)
            for row in range(B):
                alone = attn(q[row:row + 1], k[row:row + 1], v[row:row + 1], causal=causal)
                assert_close(out[row:row + 1], alone,
                             f"{label(entry, device=device, causal=causal)}: batch row {row} vs the row alone")


@contract("attention", needs=("attention_bias",))
def test_attention_bias_broadcasts_and_acts(entry: Entry) -> None:
    """A bias of shape (1,H,T,T), (B,1,1,T) or (B,H,T,T) acts exactly as its (B,H,T,T) expansion; a zero
    bias is no bias; a nonzero bias changes the output."""
    for device in devices(entry):
        attn = backend(entry, device)
        for causal in modes(entry):
            q, k, v = qkv(device, seed=5)
            plain = attn(q, k, v, causal=causal)
            what = label(entry, device=device, causal=causal)
            zero = attn(q, k, v, causal=causal, attn_bias=torch.zeros(1, 1, 1, T, device=device))
            assert_close(zero, plain, f"{what}: a zero bias changes the output")
            for shape in ((1, 4, T, T), (B, 1, 1, T), (B, 4, T, T)):
                bias = 2.0 * randn(*shape, seed=6, device=device)
                out = attn(q, k, v, causal=causal, attn_bias=bias)
                expanded = attn(q, k, v, causal=causal, attn_bias=bias.expand(B, 4, T, T).contiguous())
                assert_close(out, expanded, f"{what}: bias of shape {shape} vs its expansion to {(B, 4, T, T)}")
                assert_changes(out, plain, f"{what}: a bias of shape {shape} has no effect")


@contract("attention", needs=("padding_mask",))
def test_padded_keys_are_as_if_absent(entry: Entry) -> None:
    """Sequence 1 has ``pad`` padded keys (left of a causal sequence, right of a bidirectional one) as
    ``-inf`` bias entries: its real queries get the backend's output without the padding."""
    pad = 3
    for device in devices(entry):
        attn = backend(entry, device)
        for causal in modes(entry):
            q, k, v = qkv(device, seed=7)
            real = slice(pad, T) if causal else slice(0, T - pad)
            bias = torch.zeros(B, 1, 1, T, device=device)
            bias[1, :, :, slice(0, pad) if causal else slice(T - pad, T)] = float("-inf")
            out = attn(q, k, v, causal=causal, attn_bias=bias)
            what = label(entry, device=device, causal=causal, padded_keys=pad)
            assert_close(out[:1], attn(q[:1], k[:1], v[:1], causal=causal), f"{what}, unpadded sequence")
            alone = attn(q[1:, :, real], k[1:, :, real], v[1:, :, real], causal=causal)
            assert_close(out[1:, :, real], alone, f"{what}, real queries of the padded sequence")


@contract("attention", needs=("gqa",))
def test_grouped_query_heads_read_their_kv_head(entry: Entry) -> None:
    """With Hkv < H kv heads, query head ``h`` reads kv head ``h // (H / Hkv)``: the output equals the
    backend's own output with every kv head repeated for its group."""
    for device in devices(entry):
        full = backend(entry, device)
        for kv_heads in (2, 1):
            attn = backend(entry, device, tiny_dims(n_kv_heads=kv_heads))
            for causal in modes(entry):
                q, k, v = qkv(device, kv_heads=kv_heads, seed=8)
                out = attn(q, k, v, causal=causal)
                what = label(entry, device=device, causal=causal, kv_heads=kv_heads)
                assert out.shape == q.shape, f"{what}: output shape {tuple(out.shape)}"
                groups = 4 // kv_heads
                repeated = full(q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), causal=causal)
                assert_close(out, repeated, f"{what}: vs each kv head repeated for its {groups} query heads")


@contract("attention", needs=("sliding_window",))
def test_sliding_window_sees_only_the_window(entry: Entry) -> None:
    """``window`` is a schema field: replacing every key outside a query's window leaves its output
    unchanged; replacing the keys inside changes it (windows of 1 and 3 keys)."""
    for device in devices(entry):
        for window in (1, 3):
            attn = backend(entry, device, window=window)
            for causal in modes(entry):
                q, k, v = qkv(device, seed=9)
                out = attn(q, k, v, causal=causal)
                for query in (T - 1, 4):
                    seen = visible(1, T, query, causal, window, "cpu")[0].tolist()
                    outside = [j for j in range(T) if not seen[j]]
                    inside = [j for j in range(T) if seen[j]]
                    what = label(entry, device=device, causal=causal, window=window, query=query)
                    unseen = attn(q, replaced(k, outside, 60), replaced(v, outside, 61), causal=causal)
                    assert_close(unseen[:, :, query], out[:, :, query], f"{what}: keys outside the window matter")
                    inner = attn(q, replaced(k, inside, 62), replaced(v, inside, 63), causal=causal)
                    assert_changes(inner[:, :, query], out[:, :, query], f"{what}: keys inside the window are ignored")


def _decode(entry: Entry, device: str, dims: Any, options: dict[str, Any], with_bias: bool) -> torch.Tensor:
    """Prefill 4 tokens, then 1, then a chunk of 3, then 1 at a time, through a :class:`KVCache`; the
    result must equal the full forward. Returns the full forward (and its inputs' seed is fixed)."""
    kv_heads = dims.n_kv_heads
    q, k, v = qkv(device, kv_heads=kv_heads, seed=10)
    bias = randn(1, 4, T, T, seed=11, device=device) if with_bias else None
    attn = backend(entry, device, dims, **options)
    full = attn(q, k, v, causal=True, attn_bias=bias)
    cache = KVCache(B, kv_heads, T, 8, device, torch.float32)
    pieces = []
    for start, end in ((0, 4), (4, 5), (5, 8), (8, 9)):
        keys, values = cache.update(k[:, :, start:end], v[:, :, start:end], start)
        step_bias = bias[:, :, start:end, :end] if bias is not None else None
        pieces.append(attn(q[:, :, start:end], keys, values, causal=True, attn_bias=step_bias, q_offset=start))
    what = label(entry, device=device, kv_heads=kv_heads, bias=with_bias, **options)
    assert_close(torch.cat(pieces, dim=2), full, f"{what}: incremental decoding vs full recomputation")
    return full


def _capability_cases(entry: Entry, window: int) -> list[tuple[Any, dict[str, Any], bool]]:
    """(dims, options, with_bias) of each case the entry's other capabilities call for: plain, with an
    attention bias, with fewer kv heads (GQA), with a sliding ``window``."""
    caps = entry.capabilities
    cases = [(tiny_dims(), {}, False)]
    if caps.get("attention_bias"):
        cases.append((tiny_dims(), {}, True))
    if caps.get("gqa"):
        cases.append((tiny_dims(n_kv_heads=2), {}, False))
    if caps.get("sliding_window"):
        cases.append((tiny_dims(), {"window": window}, False))
    return cases


@contract("attention", needs=("kv_cache", "causal"))
def test_kv_cache_decoding_matches_full_recomputation(entry: Entry) -> None:
    for device in devices(entry):
        for dims, options, with_bias in _capability_cases(entry, window=3):
            _decode(entry, device, dims, options, with_bias)


# -- ragged batches (plugin API 1.1) -----------------------------------------------------------------
#: per row: new queries and keys already cached (so row b's queries sit at RAGGED_CACHED[b] + i and it has
#: RAGGED_CACHED[b] + RAGGED_QUERIES[b] real keys); one decode-like row, one chunk, one short prefill
RAGGED_QUERIES, RAGGED_CACHED = (1, 3, 2), (6, 0, 2)


def _ragged_inputs(device: str, kv_heads: int, *, extra_keys: int = 0, seed: int = 70) -> tuple[torch.Tensor, ...]:
    """q (3, 4, Tq, 8), k and v (3, Hkv, Tk, 8) right-padded, the (3,) int64 ``q_offset`` and ``kv_lengths``."""
    offsets = torch.tensor(RAGGED_CACHED, device=device)
    lengths = offsets + torch.tensor(RAGGED_QUERIES, device=device)
    tq, tk, rows = max(RAGGED_QUERIES), int(lengths.max()) + extra_keys, len(RAGGED_QUERIES)
    return (randn(rows, 4, tq, 8, seed=seed, device=device), randn(rows, kv_heads, tk, 8, seed=seed + 1, device=device),
            randn(rows, kv_heads, tk, 8, seed=seed + 2, device=device), offsets, lengths)


def _ragged_bias(offsets: torch.Tensor, tq: int, tk: int) -> torch.Tensor:
    """(B, 4, Tq, Tk) ALiBi-like bias from each row's own query positions (the shape a ragged encoding gives)."""
    queries = offsets[:, None, None] + torch.arange(tq, device=offsets.device)[None, :, None]
    distance = (queries - torch.arange(tk, device=offsets.device)[None, None, :]).float()
    slopes = 2.0 ** -torch.arange(1, 5, dtype=torch.float32, device=offsets.device)
    return -slopes[None, :, None, None] * distance[:, None]


@contract("attention", needs=("ragged",))
def test_ragged_rows_equal_each_row_alone(entry: Entry) -> None:
    """Row ``b`` of a ragged call (``q_offset`` and ``kv_lengths`` tensors, keys right-padded) equals the
    backend's output for that row alone: its real queries, its real keys, ``q_offset=int``."""
    for device in devices(entry):
        for causal in modes(entry):
            for dims, options, with_bias in _capability_cases(entry, window=2):
                attn = backend(entry, device, dims, **options)
                q, k, v, offsets, lengths = _ragged_inputs(device, dims.n_kv_heads, extra_keys=2)
                bias = _ragged_bias(offsets, q.shape[2], k.shape[2]) if with_bias else None
                out = attn(q, k, v, causal=causal, attn_bias=bias, q_offset=offsets, kv_lengths=lengths)
                what = label(entry, device=device, causal=causal, kv_heads=dims.n_kv_heads, bias=with_bias, **options)
                assert out.shape == q.shape, \
                    f"{what}: ragged output shape {tuple(out.shape)}, expected {tuple(q.shape)}"
                assert torch.isfinite(out).all(), f"{what}: non-finite output in a ragged batch (padding queries too)"
                for row, (n, offset, length) in enumerate(zip(RAGGED_QUERIES, offsets.tolist(), lengths.tolist())):
                    row_bias = None if bias is None else bias[row:row + 1, :, :n, :length]
                    alone = attn(q[row:row + 1, :, :n], k[row:row + 1, :, :length], v[row:row + 1, :, :length],
                                 causal=causal, attn_bias=row_bias, q_offset=offset)
                    assert_close(out[row:row + 1, :, :n], alone,
                                 f"{what}: ragged row {row} (q_offset={offset}, kv_length={length}) vs the row alone")


@contract("attention", needs=("ragged",))
def test_ragged_rows_ignore_order_and_padding(entry: Entry) -> None:
    """Permuting the rows permutes the outputs; more padding keys, holding large (finite) garbage, change no
    real query's output."""
    for device in devices(entry):
        attn = backend(entry, device)
        for causal in modes(entry):
            q, k, v, offsets, lengths = _ragged_inputs(device, 4, seed=80)
            out = attn(q, k, v, causal=causal, q_offset=offsets, kv_lengths=lengths)
            what = label(entry, device=device, causal=causal)
            order = torch.tensor([2, 0, 1], device=device)
            permuted = attn(q[order], k[order], v[order], causal=causal, q_offset=offsets[order],
                            kv_lengths=lengths[order])
            extra = 5
            padded_k = torch.cat([k, randn(3, 4, extra, 8, seed=81, device=device)], dim=2)
            padded_v = torch.cat([v, randn(3, 4, extra, 8, seed=82, device=device)], dim=2)
            for row, length in enumerate(lengths.tolist()):
                padded_k[row, :, length:] *= 1e3
                padded_v[row, :, length:] = 1e3 * randn(4, padded_v.shape[2] - length, 8, seed=83 + row, device=device)
            padded = attn(q, padded_k, padded_v, causal=causal, q_offset=offsets, kv_lengths=lengths)
            for row, n in enumerate(RAGGED_QUERIES):
                moved = order.tolist().index(row)
                assert_close(permuted[moved, :, :n], out[row, :, :n], f"{what}: ragged row {row} moved to {moved}")
                assert_close(padded[row, :, :n], out[row, :, :n],
                             f"{what}: ragged row {row} with {extra} more padding keys holding garbage")


@contract("attention")
def test_dropout_only_while_training(entry: Entry) -> None:
    """In eval mode ``dims.dropout`` changes nothing (the output equals the backend's without dropout);
    in training mode it does."""
    for device in devices(entry):
        causal = modes(entry)[0]
        q, k, v = qkv(device, seed=12)
        attn = backend(entry, device, tiny_dims(dropout=0.5))
        evaluated = attn(q, k, v, causal=causal)
        what = label(entry, device=device, dropout=0.5)
        assert_close(evaluated, backend(entry, device)(q, k, v, causal=causal), f"{what}, eval mode vs dropout=0")
        torch.manual_seed(0)
        trained = attn.train()(q, k, v, causal=causal)
        assert not torch.allclose(trained, evaluated), f"{what}: training mode ignores dims.dropout"


@contract("attention")
def test_gradients_reach_queries_keys_and_values(entry: Entry) -> None:
    for device in devices(entry):
        causal = modes(entry)[0]
        q, k, v = (t.requires_grad_() for t in qkv(device, seed=13))
        (backend(entry, device)(q, k, v, causal=causal) * randn(B, 4, T, 8, seed=14, device=device)).sum().backward()
        for name, tensor in zip("qkv", (q, k, v)):
            what = label(entry, device=device, causal=causal)
            assert tensor.grad is not None, f"{what}: no gradient reaches {name}"
            assert torch.isfinite(tensor.grad).all(), f"{what}: non-finite gradient of {name}"
            assert float(tensor.grad.abs().max()) > 0, f"{what}: the gradient of {name} is zero"


# -- exact softmax attention: equals the reference ---------------------------------------------------
@contract("attention", needs=("exact_softmax",))
def test_each_declared_dtype_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        for dtype in dtypes(entry):
            for causal in modes(entry):
                q, k, v = qkv(device, dtype=dtype)
                out = backend(entry, device)(q, k, v, causal=causal)
                expected = reference(entry, device)(q.float(), k.float(), v.float(), causal=causal)
                assert_close(out, expected, label(entry, device=device, dtype=dtype, causal=causal), dtype)


@contract("attention", needs=("exact_softmax", "causal"))
def test_causal_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        q, k, v = qkv(device, seed=3)
        out = backend(entry, device)(q, k, v, causal=True)
        assert_close(out, reference(entry, device)(q, k, v, causal=True), label(entry, device=device, causal=True))


@contract("attention", needs=("exact_softmax", "bidirectional"))
def test_bidirectional_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        q, k, v = qkv(device, seed=4)
        out = backend(entry, device)(q, k, v, causal=False)
        assert_close(out, reference(entry, device)(q, k, v, causal=False), label(entry, device=device, causal=False))


@contract("attention", needs=("exact_softmax", "attention_bias"))
def test_attention_bias_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        for causal in modes(entry):
            for shape in ((1, 4, T, T), (B, 1, 1, T), (B, 4, T, T)):
                q, k, v = qkv(device, seed=5)
                bias = 2.0 * randn(*shape, seed=6, device=device)
                out = backend(entry, device)(q, k, v, causal=causal, attn_bias=bias)
                expected = reference(entry, device)(q, k, v, causal=causal, attn_bias=bias)
                assert_close(out, expected, label(entry, device=device, causal=causal, bias_shape=shape))


@contract("attention", needs=("exact_softmax", "gqa"))
def test_grouped_query_heads_match_reference(entry: Entry) -> None:
    for device in devices(entry):
        for kv_heads in (2, 1):
            dims = tiny_dims(n_kv_heads=kv_heads)
            for causal in modes(entry):
                q, k, v = qkv(device, kv_heads=kv_heads, seed=8)
                out = backend(entry, device, dims)(q, k, v, causal=causal)
                expected = reference(entry, device, dims)(q, k, v, causal=causal)
                assert_close(out, expected, label(entry, device=device, causal=causal, kv_heads=kv_heads))


@contract("attention", needs=("exact_softmax", "sliding_window"))
def test_sliding_window_matches_reference(entry: Entry) -> None:
    """Windows of 1 and 3 keys, full passes and (with kv_cache) offsets."""
    offsets = [0, 5] if entry.capabilities.get("kv_cache") else [0]
    for device in devices(entry):
        for window in (1, 3):
            for causal in modes(entry):
                for offset in offsets:
                    tq = T - offset
                    q, k, v = qkv(device, tq=tq, seed=9)
                    out = backend(entry, device, window=window)(q, k, v, causal=causal, q_offset=offset)
                    expected = reference(entry, device, window=window)(q, k, v, causal=causal, q_offset=offset)
                    assert_close(out, expected, label(entry, device=device, causal=causal, window=window,
                                                      q_offset=offset))


@contract("attention", needs=("exact_softmax", "kv_cache", "causal"))
def test_kv_cache_decoding_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        for dims, options, with_bias in _capability_cases(entry, window=3):
            full = _decode(entry, device, dims, options, with_bias)
            q, k, v = qkv(device, kv_heads=dims.n_kv_heads, seed=10)
            bias = randn(1, 4, T, T, seed=11, device=device) if with_bias else None
            expected = reference(entry, device, dims, **options)(q, k, v, causal=True, attn_bias=bias)
            assert_close(full, expected, label(entry, device=device, kv_heads=dims.n_kv_heads, bias=with_bias,
                                               **options))


@contract("attention", needs=("exact_softmax",))
def test_gradients_match_reference(entry: Entry) -> None:
    for device in devices(entry):
        causal = modes(entry)[0]
        grads = []
        for attn in (backend(entry, device), reference(entry, device)):
            q, k, v = (t.requires_grad_() for t in qkv(device, seed=13))
            weights = randn(B, 4, T, 8, seed=14, device=device)
            (attn(q, k, v, causal=causal) * weights).sum().backward()
            grads.append((q.grad, k.grad, v.grad))
        for name, got, want in zip("qkv", *grads):
            what = label(entry, device=device, causal=causal)
            assert got is not None, f"{what}: no gradient reaches {name}"
            assert_close(got, want.to(got.dtype), f"{what}: d(out)/d{name}")
