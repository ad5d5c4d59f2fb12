"""Contract tests for the attention backends: every backend must agree with the reference math."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from plugformer.interfaces import KVCache, ModelDims
from plugformer_attention.naive import NaiveAttention
from plugformer_attention.sdpa import SdpaAttention

BACKENDS = [NaiveAttention, SdpaAttention]
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
H, D = 4, 8


def make(cls, n_kv_heads: int = H, dropout: float = 0.0):
    dims = ModelDims(vocab_size=16, d_model=H * D, n_heads=H, n_kv_heads=n_kv_heads, max_seq_len=32,
                     dropout=dropout)
    return cls(None, dims).eval()


def qkv(tq: int, tk: int, n_kv_heads: int = H, dtype=torch.float32, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, H, tq, D, generator=g)
    k = torch.randn(batch, n_kv_heads, tk, D, generator=g)
    v = torch.randn(batch, n_kv_heads, tk, D, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def bias_for(kind: str | None, tq: int, tk: int, batch: int = 2) -> torch.Tensor | None:
    """None, an ALiBi-like per-head distance bias, or a padding mask hiding the last key of batch 0."""
    if kind is None:
        return None
    if kind == "alibi":
        dist = torch.arange(tk)[None, :] - torch.arange(tq)[:, None] - (tk - tq)
        slopes = 2.0 ** -torch.arange(1, H + 1, dtype=torch.float32)
        return (slopes[:, None, None] * dist).unsqueeze(0)  # (1, H, Tq, Tk)
    pad = torch.zeros(batch, 1, 1, tk)
    pad[0, ..., -1] = float("-inf")
    return pad


def loop_reference(q, k, v, causal: bool, bias, q_offset: int) -> torch.Tensor:
    """Attention one query at a time in float64: an independent check of the naive backend."""
    b_, h_, tq, d = q.shape
    groups = h_ // k.shape[1]
    out = torch.zeros(b_, h_, tq, d, dtype=torch.float64)
    full_bias = torch.zeros(b_, h_, tq, k.shape[2]) if bias is None else bias.expand(b_, h_, tq, -1)
    for b in range(b_):
        for h in range(h_):
            for i in range(tq):
                n = q_offset + i + 1 if causal else k.shape[2]
                kk, vv = k[b, h // groups, :n].double(), v[b, h // groups, :n].double()
                s = kk @ q[b, h, i].double() / math.sqrt(d) + full_bias[b, h, i, :n].double()
                out[b, h, i] = torch.softmax(s, 0) @ vv
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("bias", [None, "alibi", "pad"])
@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_naive_matches_loop_reference(causal, bias, n_kv_heads):
    q, k, v = qkv(3, 5, n_kv_heads)
    got = make(NaiveAttention, n_kv_heads)(q, k, v, causal=causal, attn_bias=bias_for(bias, 3, 5), q_offset=2)
    torch.testing.assert_close(got.double(), loop_reference(q, k, v, causal, bias_for(bias, 3, 5), 2),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("bias", [None, "alibi", "pad"])
@pytest.mark.parametrize("n_kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_sdpa_matches_naive(dtype, causal, bias, n_kv_heads):
    torch.manual_seed(0)
    q, k, v = qkv(6, 6, n_kv_heads, dtype)
    b = bias_for(bias, 6, 6)
    ref = make(NaiveAttention, n_kv_heads)(q, k, v, causal=causal, attn_bias=b)
    got = make(SdpaAttention, n_kv_heads)(q, k, v, causal=causal, attn_bias=b)
    assert got.dtype == ref.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got, ref, **TOL[dtype])


@pytest.mark.parametrize("cls", BACKENDS)
@pytest.mark.parametrize("q_offset,tq", [(4, 1), (3, 3), (0, 2)])
def test_offset_masks_relative_to_cache(cls, q_offset, tq):
    """Queries after ``q_offset`` cached keys: each sees keys up to its own absolute position."""
    q, k, v = qkv(tq, q_offset + tq, n_kv_heads=2)
    got = make(cls, 2)(q, k, v, causal=True, q_offset=q_offset)
    torch.testing.assert_close(got.double(), loop_reference(q, k, v, True, None, q_offset), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", BACKENDS)
def test_first_causal_query_sees_only_first_key(cls):
    q, k, v = qkv(4, 4)
    out = make(cls)(q, k, v, causal=True)
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0])


@pytest.mark.parametrize("cls", BACKENDS)
def test_gqa_head_mapping(cls):
    """Query head h reads kv head h // (H // Hkv): same as MHA with kv heads copied that way."""
    q, k, v = qkv(5, 5, n_kv_heads=2)
    index = torch.tensor([h // (H // 2) for h in range(H)])
    gqa = make(cls, 2)(q, k, v, causal=True)
    mha = make(cls, H)(q, k[:, index], v[:, index], causal=True)
    torch.testing.assert_close(gqa, mha)


@pytest.mark.parametrize("cls", BACKENDS)
@pytest.mark.parametrize("chunks", [(1, 1, 1, 1, 1, 1, 1), (3, 1, 2, 1), (4, 3)], ids=["tokens", "mixed", "prefill"])
@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("bias", [None, "alibi"])
def test_kv_cache_protocol_matches_full(cls, chunks, n_kv_heads, bias):
    """Feeding keys chunk by chunk through a KVCache gives the same output as one full pass."""
    total = sum(chunks)
    q, k, v = qkv(total, total, n_kv_heads)
    attn = make(cls, n_kv_heads)
    full_bias = bias_for(bias, total, total)
    full = attn(q, k, v, causal=True, attn_bias=full_bias)

    cache = KVCache(2, n_kv_heads, max_len=16, head_dim=D, device="cpu", dtype=torch.float32)
    outs, past = [], 0
    for t in chunks:
        ks, vs = cache.update(k[:, :, past:past + t], v[:, :, past:past + t], start=past)
        b = None if full_bias is None else full_bias[..., past:past + t, :past + t]
        outs.append(attn(q[:, :, past:past + t], ks, vs, causal=True, attn_bias=b, q_offset=past))
        past += t
    torch.testing.assert_close(torch.cat(outs, dim=2), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", BACKENDS)
def test_dropout_only_in_training(cls):
    q, k, v = qkv(6, 6)
    plain = make(cls)(q, k, v, causal=True)
    attn = make(cls, dropout=0.5)
    torch.testing.assert_close(attn(q, k, v, causal=True), plain)  # eval: no dropout
    attn.train()
    torch.manual_seed(0)
    assert not torch.allclose(attn(q, k, v, causal=True), plain)


@pytest.mark.parametrize("cls", BACKENDS)
def test_rejects_heads_not_a_multiple_of_kv_heads(cls):
    q, _, _ = qkv(2, 2)
    _, k, v = qkv(2, 2, n_kv_heads=3)
    with pytest.raises(ValueError, match="multiple"):
        make(cls)(q, k, v, causal=False)


def test_registration_is_torch_free_and_resolves():
    code = ("import sys, plugformer, plugformer_attention as p\n"
            "r = plugformer.Registries(); p.plugformer_register(registries=r)\n"
            "assert 'torch' not in sys.modules, 'registration imported torch'\n"
            "print(r.attention.names())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "naive" in out.stdout and "sdpa" in out.stdout

    import plugformer
    import plugformer_attention

    registries = plugformer.Registries()
    plugformer_attention.plugformer_register(registries=registries)
    for name, cls in [("naive", NaiveAttention), ("sdpa", SdpaAttention)]:
        entry = registries.attention.get(name)
        assert entry.load() is cls
        assert entry.capabilities["kv_cache"] and entry.capabilities["gqa"]
        cls(entry.load_schema()(), make(cls).dims)  # the schema's defaults construct the backend
