"""Attention contract: every backend equals the reference (``naive``) on each case it declares.

Cases follow the ``Attention`` docstring: output shape and dtype, causal and bidirectional masking,
additive biases, ``-inf`` padding, grouped-query heads, sliding windows, the KV-cache offset protocol,
dropout only while training, and gradients. Each runs on every declared device present here.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from plugformer.interfaces import KVCache
from plugformer.registry import Entry
from plugformer.testing.construct import build, devices, dtypes, label, randn, tiny_dims
from plugformer.testing.reference import as_reference, assert_close, attention_formula
from plugformer.testing.selection import registries, skip_reason

contract = pytest.mark.plugformer_contract
B, T = 2, 9


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
    """The registered ``naive`` backend with the same options; the float64 formula where it cannot serve."""
    naive = registries().attention.get("naive") if "naive" in registries().attention else None
    usable = (naive is not None and entry.name != "naive" and skip_reason(naive, True) is None
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
def test_each_declared_dtype_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        for dtype in dtypes(entry):
            for causal in modes(entry):
                q, k, v = qkv(device, dtype=dtype)
                out = backend(entry, device)(q, k, v, causal=causal)
                expected = reference(entry, device)(q.float(), k.float(), v.float(), causal=causal)
                assert_close(out, expected, label(entry, device=device, dtype=dtype, causal=causal), dtype)


@contract("attention", needs=("causal",))
def test_causal_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        q, k, v = qkv(device, seed=3)
        out = backend(entry, device)(q, k, v, causal=True)
        assert_close(out, reference(entry, device)(q, k, v, causal=True), label(entry, device=device, causal=True))


@contract("attention", needs=("bidirectional",))
def test_bidirectional_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        q, k, v = qkv(device, seed=4)
        out = backend(entry, device)(q, k, v, causal=False)
        assert_close(out, reference(entry, device)(q, k, v, causal=False), label(entry, device=device, causal=False))


@contract("attention", needs=("attention_bias",))
def test_attention_bias_matches_reference(entry: Entry) -> None:
    for device in devices(entry):
        for causal in modes(entry):
            for shape in ((1, 4, T, T), (B, 1, 1, T), (B, 4, T, T)):
                q, k, v = qkv(device, seed=5)
                bias = 2.0 * randn(*shape, seed=6, device=device)
                out = backend(entry, device)(q, k, v, causal=causal, attn_bias=bias)
                expected = reference(entry, device)(q, k, v, causal=causal, attn_bias=bias)
                assert_close(out, expected, label(entry, device=device, causal=causal, bias_shape=shape))


@contract("attention", needs=("padding_mask",))
def test_padded_keys_are_as_if_absent(entry: Entry) -> None:
    """Sequence 1 has ``pad`` padded keys (left of a causal sequence, right of a bidirectional one)."""
    pad = 3
    for device in devices(entry):
        for causal in modes(entry):
            q, k, v = qkv(device, seed=7)
            real = slice(pad, T) if causal else slice(0, T - pad)
            bias = torch.zeros(B, 1, 1, T, device=device)
            bias[1, :, :, slice(0, pad) if causal else slice(T - pad, T)] = float("-inf")
            out = backend(entry, device)(q, k, v, causal=causal, attn_bias=bias)
            ref = reference(entry, device)
            what = label(entry, device=device, causal=causal, padded_keys=pad)
            assert_close(out[:1], ref(q[:1], k[:1], v[:1], causal=causal), f"{what}, unpadded sequence")
            alone = ref(q[1:, :, real], k[1:, :, real], v[1:, :, real], causal=causal)
            assert_close(out[1:, :, real], alone, f"{what}, real queries of the padded sequence")


@contract("attention", needs=("gqa",))
def test_grouped_query_heads_match_reference(entry: Entry) -> None:
    for device in devices(entry):
        for kv_heads in (2, 1):
            dims = tiny_dims(n_kv_heads=kv_heads)
            for causal in modes(entry):
                q, k, v = qkv(device, kv_heads=kv_heads, seed=8)
                out = backend(entry, device, dims)(q, k, v, causal=causal)
                expected = reference(entry, device, dims)(q, k, v, causal=causal)
                assert out.shape == q.shape, f"{label(entry, kv_heads=kv_heads)}: output shape {tuple(out.shape)}"
                assert_close(out, expected, label(entry, device=device, causal=causal, kv_heads=kv_heads))


@contract("attention", needs=("sliding_window",))
def test_sliding_window_matches_reference(entry: Entry) -> None:
    """``window`` is a schema field; windows of 1 and 3 keys, full passes and (with kv_cache) offsets."""
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


def _decode(entry: Entry, device: str, dims: Any, options: dict[str, Any], with_bias: bool) -> None:
    """Prefill 4 tokens, then 1, then a chunk of 3, then 1 at a time, through a :class:`KVCache`."""
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
    assert_close(full, reference(entry, device, dims, **options)(q, k, v, causal=True, attn_bias=bias), what)


@contract("attention", needs=("kv_cache", "causal"))
def test_kv_cache_decoding_matches_full_recomputation(entry: Entry) -> None:
    caps = entry.capabilities
    for device in devices(entry):
        _decode(entry, device, tiny_dims(), {}, with_bias=False)
        if caps.get("attention_bias"):
            _decode(entry, device, tiny_dims(), {}, with_bias=True)
        if caps.get("gqa"):
            _decode(entry, device, tiny_dims(n_kv_heads=2), {}, with_bias=False)
        if caps.get("sliding_window"):
            _decode(entry, device, tiny_dims(), {"window": 3}, with_bias=False)


@contract("attention")
def test_dropout_only_while_training(entry: Entry) -> None:
    dims = tiny_dims(dropout=0.5)
    for device in devices(entry):
        causal = modes(entry)[0]
        q, k, v = qkv(device, seed=12)
        attn = backend(entry, device, dims)
        evaluated = attn(q, k, v, causal=causal)
        what = label(entry, device=device, dropout=0.5)
        assert_close(evaluated, reference(entry, device, dims)(q, k, v, causal=causal), f"{what}, eval mode")
        torch.manual_seed(0)
        trained = attn.train()(q, k, v, causal=causal)
        assert not torch.allclose(trained, evaluated), f"{what}: training mode ignores dims.dropout"


@contract("attention")
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
