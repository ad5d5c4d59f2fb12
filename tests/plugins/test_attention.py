"""Contract tests for the attention backends: every backend must agree with the reference math."""
from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from plugformer.capabilities import ATTENTION_FEATURES
from plugformer.interfaces import KVCache, ModelDims
from plugformer_attention import xformers as xf
from plugformer_attention.naive import NaiveAttention
from plugformer_attention.schemas import (AttentionFallback, NaiveAttentionConfig, SdpaAttentionConfig,
                                          XformersAttentionConfig)
from plugformer_attention.sdpa import SdpaAttention

BACKENDS = [NaiveAttention, SdpaAttention]
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}
H, D = 4, 8


def make(cls, n_kv_heads: int = H, dropout: float = 0.0, config=None):
    dims = ModelDims(vocab_size=16, d_model=H * D, n_heads=H, n_kv_heads=n_kv_heads, max_seq_len=32,
                     dropout=dropout)
    return cls(config, dims).eval()


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


def loop_reference(q, k, v, causal: bool, bias, q_offset: int, window: int | None = None) -> torch.Tensor:
    """Attention one query at a time in float64: an independent check of the naive backend.

    With a ``window`` the keys each query sees are listed one by one from the contract's rule.
    """
    b_, h_, tq, d = q.shape
    groups = h_ // k.shape[1]
    out = torch.zeros(b_, h_, tq, d, dtype=torch.float64)
    full_bias = torch.zeros(b_, h_, tq, k.shape[2]) if bias is None else bias.expand(b_, h_, tq, -1)
    for b in range(b_):
        for h in range(h_):
            for i in range(tq):
                p = q_offset + i
                seen = [j for j in range(k.shape[2]) if (j <= p or not causal)
                        and (window is None or abs(p - j) < window)]
                kk, vv = k[b, h // groups, seen].double(), v[b, h // groups, seen].double()
                s = kk @ q[b, h, i].double() / math.sqrt(d) + full_bias[b, h, i, seen].double()
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
            "ok, why = r.attention.get('xformers').availability()\n"
            "import importlib.util\n"
            "if importlib.util.find_spec('xformers') is None:  # listing availability stays torch-free\n"
            "    assert not ok and 'torch' not in sys.modules, why\n"
            "print(r.attention.names())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert all(n in out.stdout for n in ("naive", "sdpa", "xformers"))

    import plugformer
    import plugformer_attention

    registries = plugformer.Registries()
    plugformer_attention.plugformer_register(registries=registries)
    for name, cls in [("naive", NaiveAttention), ("sdpa", SdpaAttention), ("xformers", xf.XformersAttention)]:
        entry = registries.attention.get(name)
        assert entry.load() is cls
        schema = entry.load_schema()
        config = schema(fallback=AttentionFallback.sdpa) if name == "xformers" else schema()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(config, make(NaiveAttention).dims)  # the schema's defaults construct the backend


def test_capabilities_are_declared_truthfully():
    """Every contract feature the tests in this file exercise is claimed, and nothing else is."""
    import plugformer
    import plugformer_attention

    registries = plugformer.Registries()
    plugformer_attention.plugformer_register(registries=registries)
    for entry in registries.attention:
        caps = entry.capabilities
        for feature in ATTENTION_FEATURES:
            assert caps[feature] is True, (entry.name, feature)
        assert set(caps["dtypes"]) <= {"float32", "bfloat16", "float16"}
    assert registries.attention.get("xformers").capabilities["devices"] == ["cuda"]
    assert set(registries.attention.get("xformers").capabilities["dtypes"]) >= {"float16", "bfloat16"}
    for name in ("naive", "sdpa"):
        assert registries.attention.get(name).capabilities["devices"] == ["cpu", "cuda"]
        assert registries.attention.get(name).availability() == (True, "")


# ---- sliding window --------------------------------------------------------------------------------

def windowed(cls, window: int | None, n_kv_heads: int = H, dropout: float = 0.0):
    config = {NaiveAttention: NaiveAttentionConfig, SdpaAttention: SdpaAttentionConfig}[cls](window=window)
    return make(cls, n_kv_heads, dropout, config)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("window", [1, 2, 3])
@pytest.mark.parametrize("q_offset,tq", [(0, 6), (3, 3), (5, 1)])
def test_naive_window_matches_loop_reference(causal, window, q_offset, tq):
    q, k, v = qkv(tq, q_offset + tq, n_kv_heads=2)
    b = bias_for("alibi", tq, q_offset + tq)
    got = windowed(NaiveAttention, window, 2)(q, k, v, causal=causal, attn_bias=b, q_offset=q_offset)
    torch.testing.assert_close(got.double(), loop_reference(q, k, v, causal, b, q_offset, window),
                               atol=1e-5, rtol=1e-5)


def test_window_one_sees_only_itself():
    q, k, v = qkv(5, 5)
    for causal in (True, False):
        out = windowed(NaiveAttention, 1)(q, k, v, causal=causal)
        torch.testing.assert_close(out, v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("bias", [None, "alibi", "pad"])
@pytest.mark.parametrize("n_kv_heads", [4, 1], ids=["mha", "mqa"])
def test_sdpa_window_matches_naive(dtype, causal, bias, n_kv_heads):
    q, k, v = qkv(7, 7, n_kv_heads, dtype)
    b = bias_for(bias, 7, 7)
    ref = windowed(NaiveAttention, 3, n_kv_heads)(q, k, v, causal=causal, attn_bias=b)
    got = windowed(SdpaAttention, 3, n_kv_heads)(q, k, v, causal=causal, attn_bias=b)
    torch.testing.assert_close(got, ref, **TOL[dtype])


@pytest.mark.parametrize("cls", BACKENDS)
@pytest.mark.parametrize("chunks", [(1, 1, 1, 1, 1, 1, 1), (4, 3)], ids=["tokens", "prefill"])
def test_window_through_kv_cache_matches_full(cls, chunks):
    """The window is relative to absolute positions, so decoding after a cache keeps it."""
    total = sum(chunks)
    q, k, v = qkv(total, total, n_kv_heads=2)
    attn = windowed(cls, 3, 2)
    full = attn(q, k, v, causal=True)
    outs, past = [], 0
    for t in chunks:
        outs.append(attn(q[:, :, past:past + t], k[:, :, :past + t], v[:, :, :past + t], causal=True, q_offset=past))
        past += t
    torch.testing.assert_close(torch.cat(outs, dim=2), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
def test_window_wider_than_input_is_global(cls, causal):
    q, k, v = qkv(5, 5)
    torch.testing.assert_close(windowed(cls, 5)(q, k, v, causal=causal), make(cls)(q, k, v, causal=causal))
    assert not torch.allclose(windowed(cls, 2)(q, k, v, causal=causal), make(cls)(q, k, v, causal=causal))


@pytest.mark.parametrize("cls", BACKENDS)
@pytest.mark.parametrize("window", [0, -3, 2.5, True])
def test_rejects_bad_window(cls, window):
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        windowed(cls, window)


# ---- padding ---------------------------------------------------------------------------------------

def padding_bias(batch: int, tk: int, padded: dict[int, slice]) -> torch.Tensor:
    """(B, 1, 1, Tk) bias: ``-inf`` on the padded keys of each listed batch row, 0 elsewhere."""
    bias = torch.zeros(batch, 1, 1, tk)
    for row, keys in padded.items():
        bias[row, ..., keys] = float("-inf")
    return bias


PADDED_BACKENDS = [(NaiveAttention, None), (SdpaAttention, None), (NaiveAttention, 2), (SdpaAttention, 2)]


@pytest.mark.parametrize("cls,window", PADDED_BACKENDS, ids=["naive", "sdpa", "naive-w2", "sdpa-w2"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_padded_keys_are_as_if_absent(cls, window, causal, side, dtype):
    """Row 0 carries 2 padding tokens; its real queries must match a run without them."""
    T, pad = 6, 2
    q, k, v = qkv(T, T, n_kv_heads=2, dtype=dtype)
    real = slice(pad, T) if side == "left" else slice(0, T - pad)
    hidden = slice(0, pad) if side == "left" else slice(T - pad, T)
    attn = windowed(cls, window, 2)
    out = attn(q, k, v, causal=causal, attn_bias=padding_bias(2, T, {0: hidden}))
    alone = attn(q[:1, :, real], k[:1, :, real], v[:1, :, real], causal=causal)
    torch.testing.assert_close(out[:1, :, real], alone, **TOL[dtype])
    torch.testing.assert_close(out[1:], attn(q[1:], k[1:], v[1:], causal=causal), **TOL[dtype])


@pytest.mark.parametrize("cls,window", PADDED_BACKENDS, ids=["naive", "sdpa", "naive-w2", "sdpa-w2"])
def test_padding_while_decoding(cls, window):
    """A left-padded prompt in the cache: the new token's output ignores the padded keys."""
    past, pad = 5, 2
    q, k, v = qkv(1, past + 1, n_kv_heads=2)
    attn = windowed(cls, window, 2)
    out = attn(q, k, v, causal=True, attn_bias=padding_bias(2, past + 1, {0: slice(0, pad)}), q_offset=past)
    alone = attn(q[:1], k[:1, :, pad:], v[:1, :, pad:], causal=True, q_offset=past - pad)
    torch.testing.assert_close(out[:1], alone, atol=1e-5, rtol=1e-5)


# ---- xformers (CPU: availability and the sdpa fallback) ---------------------------------------------

XFORMERS_OK, XFORMERS_WHY = xf.availability()
needs_xformers = pytest.mark.skipif(not XFORMERS_OK, reason=f"xformers path not testable here: {XFORMERS_WHY}")


@pytest.mark.skipif(XFORMERS_OK, reason="xformers runs here")
def test_xformers_reports_why_it_is_unavailable():
    ok, reason = xf.availability()
    assert not ok
    try:
        import xformers  # noqa: F401
    except ImportError:
        assert reason == "xformers is not installed (pip install 'plugformer[xformers]')"
    else:
        assert reason in (xf.NO_CUDA,) or reason.startswith("xformers is installed but does not import")


@pytest.mark.skipif(XFORMERS_OK, reason="xformers runs here")
def test_xformers_without_fallback_refuses_with_the_reason():
    with pytest.raises(ValueError, match="fallback=sdpa"):
        make(xf.XformersAttention, config=XformersAttentionConfig())


@pytest.mark.skipif(XFORMERS_OK, reason="xformers runs here")
def test_xformers_fallback_to_sdpa_warns_once_and_equals_sdpa(monkeypatch):
    monkeypatch.setattr(xf, "_FALLBACK_WARNED", False)
    with pytest.warns(UserWarning, match="using torch SDPA instead"):
        attn = make(xf.XformersAttention, 2, config=XformersAttentionConfig(window=3, fallback=AttentionFallback.sdpa))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second layer stays quiet
        again = make(xf.XformersAttention, 2, config=XformersAttentionConfig(fallback="sdpa"))  # plain YAML string
    q, k, v = qkv(6, 6, n_kv_heads=2)
    b = bias_for("pad", 6, 6)
    torch.testing.assert_close(attn(q, k, v, causal=True, attn_bias=b),
                               windowed(SdpaAttention, 3, 2)(q, k, v, causal=True, attn_bias=b))
    torch.testing.assert_close(again(q, k, v, causal=False), make(SdpaAttention, 2)(q, k, v, causal=False))
    attn.train()
    assert attn.fallback.training  # train/eval reaches the fallback module


def test_xformers_rejects_unknown_fallback():
    with pytest.raises(ValueError, match="fallback must be 'sdpa'"):
        make(xf.XformersAttention, config=XformersAttentionConfig(fallback="flash"))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 2])
@pytest.mark.parametrize("bias", [None, "alibi", "pad"])
def test_xformers_dense_bias_means_the_contract(causal, window, bias):
    """The dense fallback bias, added to plain scores, reproduces causal + window + attn_bias."""
    q, k, v = qkv(3, 7)
    b = bias_for(bias, 3, 7)
    dense = xf.dense_bias(b, (2, H, 3, 7), 4, causal=causal, window=window, dtype=torch.float32, device="cpu")
    assert dense.shape == (2, H, 3, 7) and dense.stride(-2) % 8 == 0  # rows aligned for the kernel
    got = make(NaiveAttention)(q, k, v, causal=False, attn_bias=dense)
    ref = windowed(NaiveAttention, window)(q, k, v, causal=causal, attn_bias=b, q_offset=4)
    torch.testing.assert_close(got, ref)


class _FakeBiases:
    """Stand-ins for ``xformers.ops.fmha.attn_bias``, recording which class is picked with what."""

    class LowerTriangularMask:
        pass

    class LowerTriangularFromBottomRightMask:
        pass

    class LowerTriangularFromBottomRightLocalAttentionMask:
        def __init__(self, window):
            self.window = window

    class LocalAttentionFromBottomRightMask:
        def __init__(self, window_left, window_right):
            self.window = (window_left, window_right)


@pytest.mark.parametrize("tq,tk,q_offset,causal,window,expected", [
    (4, 4, 0, False, None, None),  # nothing hidden: no bias at all
    (1, 5, 4, True, None, None),  # one new token after the cache sees everything
    (4, 4, 0, True, None, "LowerTriangularMask"),
    (2, 5, 3, True, None, "LowerTriangularFromBottomRightMask"),
    (2, 6, 3, True, None, "dense"),  # an offset that is neither top-left nor bottom-right
    (4, 4, 0, True, 2, "LowerTriangularFromBottomRightLocalAttentionMask"),
    (1, 5, 4, True, 2, "LowerTriangularFromBottomRightLocalAttentionMask"),
    (4, 4, 0, False, 2, "LocalAttentionFromBottomRightMask"),
    (4, 4, 0, True, 8, "LowerTriangularMask"),  # a window wider than the input is only causal
])
def test_xformers_picks_the_exact_bias_class(tq, tk, q_offset, causal, window, expected):
    found, bias = xf._structured_bias(_FakeBiases, tq, tk, q_offset, causal=causal, window=window)
    if expected == "dense":
        assert not found
        return
    assert found
    assert (bias is None) if expected is None else type(bias).__name__ == expected
    if expected == "LowerTriangularFromBottomRightLocalAttentionMask":
        assert bias.window == window
    if expected == "LocalAttentionFromBottomRightMask":
        assert bias.window == (window - 1, window - 1)


def test_xformers_falls_back_to_dense_without_the_class():
    class Old:  # an xformers that predates the local-attention classes
        LowerTriangularMask = _FakeBiases.LowerTriangularMask

    assert xf._structured_bias(Old, 4, 4, 0, causal=True, window=2) == (False, None)
    assert xf._structured_bias(Old, 2, 5, 3, causal=True, window=None) == (False, None)


# ---- xformers on CUDA (skipped unless xformers and a GPU are present) --------------------------------

GPU_TOL = {torch.float16: {"atol": 3e-3, "rtol": 3e-3}, torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2}}


def gpu_pair(window: int | None, n_kv_heads: int):
    ref = windowed(NaiveAttention, window, n_kv_heads).cuda()
    got = make(xf.XformersAttention, n_kv_heads, config=XformersAttentionConfig(window=window)).cuda()
    assert got.fallback is None
    return ref, got


@needs_xformers
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("n_kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("window", [None, 3], ids=["global", "window3"])
@pytest.mark.parametrize("bias", [None, "alibi", "pad"])
def test_xformers_matches_naive_on_cuda(dtype, causal, n_kv_heads, window, bias):
    ref, got = gpu_pair(window, n_kv_heads)
    q, k, v = (t.cuda() for t in qkv(9, 9, n_kv_heads, dtype))
    b = None if bias is None else bias_for(bias, 9, 9).cuda()
    out = got(q, k, v, causal=causal, attn_bias=b)
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out, ref(q, k, v, causal=causal, attn_bias=b), **GPU_TOL[dtype])


@needs_xformers
@pytest.mark.parametrize("window", [None, 3], ids=["global", "window3"])
@pytest.mark.parametrize("q_offset,tq,tk", [(4, 1, 5), (3, 3, 6), (2, 2, 6)], ids=["decode", "chunk", "odd-offset"])
def test_xformers_q_offset_on_cuda(window, q_offset, tq, tk):
    ref, got = gpu_pair(window, 2)
    q, k, v = (t.cuda() for t in qkv(tq, tk, 2, torch.float16))
    torch.testing.assert_close(got(q, k, v, causal=True, q_offset=q_offset),
                               ref(q, k, v, causal=True, q_offset=q_offset), **GPU_TOL[torch.float16])


@needs_xformers
def test_xformers_float32_and_padding_on_cuda():
    ref, got = gpu_pair(None, 2)
    q, k, v = (t.cuda() for t in qkv(6, 6, 2, torch.float32))
    b = padding_bias(2, 6, {0: slice(0, 2)}).cuda()
    torch.testing.assert_close(got(q, k, v, causal=False, attn_bias=b), ref(q, k, v, causal=False, attn_bias=b),
                               atol=1e-4, rtol=1e-4)


# ---- ragged batches (plugin API 1.1): rows at their own positions, padded keys ----------------------

def ragged_inputs(q_lengths: list[int], cached: list[int], n_kv_heads: int = H, extra_keys: int = 0, seed: int = 0,
                  dtype=torch.float32):
    """A right-padded ragged batch: row ``b`` has ``cached[b]`` keys already cached and ``q_lengths[b]`` new
    queries (its keys after them are padding, ``extra_keys`` more of them than the longest row needs).
    Returns q, k, v, the (B,) int64 ``q_offset`` and ``kv_lengths``."""
    tq = max(q_lengths)
    kv_lengths = torch.tensor([c + n for c, n in zip(cached, q_lengths)])
    q, k, v = qkv(tq, int(kv_lengths.max()) + extra_keys, n_kv_heads, dtype, batch=len(cached), seed=seed)
    return q, k, v, torch.tensor(cached), kv_lengths


def ragged_alibi(q_offset: torch.Tensor, tq: int, tk: int) -> torch.Tensor:
    """(B, H, Tq, Tk) ALiBi-like bias of queries at their own rows' positions over keys 0..Tk-1."""
    distance = q_offset[:, None, None] + torch.arange(tq)[None, :, None] - torch.arange(tk)[None, None, :]
    slopes = 2.0 ** -torch.arange(1, H + 1, dtype=torch.float32)
    return -slopes[None, :, None, None] * distance[:, None].float()


def assert_rows_match_alone(attn, q, k, v, q_offset, kv_lengths, q_lengths, *, causal, bias=None, **tol):
    out = attn(q, k, v, causal=causal, attn_bias=bias, q_offset=q_offset, kv_lengths=kv_lengths)
    assert out.shape == q.shape and torch.isfinite(out).all()  # padding queries too: anything finite
    for row, (offset, length, n) in enumerate(zip(q_offset.tolist(), kv_lengths.tolist(), q_lengths)):
        row_bias = None if bias is None else bias[row:row + 1, :, :n, :length]
        alone = attn(q[row:row + 1, :, :n], k[row:row + 1, :, :length], v[row:row + 1, :, :length], causal=causal,
                     attn_bias=row_bias, q_offset=offset)
        torch.testing.assert_close(out[row:row + 1, :, :n], alone, **(tol or {"atol": 1e-5, "rtol": 1e-5}))
    return out


RAGGED_SHAPES = {"decode": ([1, 1, 1], [4, 0, 9]), "chunks": ([3, 1, 2], [2, 6, 0]), "prefill": ([5, 2, 4], [0, 0, 0]),
                 # more rows than sdpa's DECODE_ROW_GROUP: the grouped decode path, groups of unequal lengths
                 "wide decode": ([1] * 19, [(7 * i) % 23 for i in range(19)])}


@pytest.mark.parametrize("cls", BACKENDS)
@pytest.mark.parametrize("shape", list(RAGGED_SHAPES))
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("window", [None, 2], ids=["global", "window2"])
@pytest.mark.parametrize("n_kv_heads", [4, 2, 1], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("bias", [None, "alibi"])
def test_ragged_batch_rows_equal_each_row_alone(cls, shape, causal, window, n_kv_heads, bias):
    """Each row of a ragged batch (its own offset, its own number of real keys, padding after them) gets
    exactly what it gets decoded alone with an int offset and only its real keys."""
    q_lengths, cached = RAGGED_SHAPES[shape]
    q, k, v, q_offset, kv_lengths = ragged_inputs(q_lengths, cached, n_kv_heads, extra_keys=2)
    b = None if bias is None else ragged_alibi(q_offset, q.shape[2], k.shape[2])
    attn = windowed(cls, window, n_kv_heads)
    assert_rows_match_alone(attn, q, k, v, q_offset, kv_lengths, q_lengths, causal=causal, bias=b)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("window", [None, 1, 2, 3])
def test_ragged_mask_is_the_contracts_rule_for_every_real_query(causal, window):
    """The per-row mask, against the rule written out for each (row, query, key): real queries see exactly
    the keys the causal rule and the window allow among the row's real keys; padding ones see some key."""
    from plugformer_attention.common import ragged_visibility

    offsets, lengths, tq, tk = torch.tensor([0, 3, 6, 2, 0]), torch.tensor([2, 4, 9, 2, 0]), 3, 11
    mask = ragged_visibility(5, tq, tk, offsets, lengths, causal=causal, window=window, device="cpu")
    assert mask.shape == (5, 1, tq, tk) and mask.dtype == torch.bool
    for b, (offset, length) in enumerate(zip(offsets.tolist(), lengths.tolist())):
        for i in range(tq):
            p = offset + i
            if p >= length:  # a padding query: anything, as long as it reads some key
                assert mask[b, 0, i].any()
                continue
            expected = [j < length and (j <= p or not causal) and (window is None or abs(p - j) < window)
                        for j in range(tk)]
            assert mask[b, 0, i].tolist() == expected, (b, i)


@pytest.mark.parametrize("cls", BACKENDS)
def test_ragged_rows_ignore_padding_key_values_and_batch_order(cls):
    """Garbage in the padded keys and values, more padding, or another row order change no real output."""
    q_lengths, cached = [1, 2, 1], [5, 1, 8]
    q, k, v, q_offset, kv_lengths = ragged_inputs(q_lengths, cached, 2, extra_keys=0, seed=3)
    attn = make(cls, 2)
    out = attn(q, k, v, causal=True, q_offset=q_offset, kv_lengths=kv_lengths)
    longer = torch.cat([k, torch.zeros_like(k[:, :, :4])], dim=2), torch.cat([v, torch.zeros_like(v[:, :, :4])], dim=2)
    for row, length in enumerate(kv_lengths.tolist()):  # padding: huge (finite) garbage
        for t in longer:
            t[row, :, length:] = 1e4 * torch.randn_like(t[row, :, length:])
    padded = attn(q, *longer, causal=True, q_offset=q_offset, kv_lengths=kv_lengths)
    order = torch.tensor([2, 0, 1])
    permuted = attn(q[order], k[order], v[order], causal=True, q_offset=q_offset[order], kv_lengths=kv_lengths[order])
    for row, n in enumerate(q_lengths):
        torch.testing.assert_close(padded[row, :, :n], out[row, :, :n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(permuted[order.tolist().index(row), :, :n], out[row, :, :n])


@pytest.mark.parametrize("cls", BACKENDS)
def test_ragged_matches_the_loop_reference_and_the_uniform_path(cls):
    """Against the one-query-at-a-time float64 reference per row; and rows that all sit at the same
    position with every key real give exactly the int-offset path's result."""
    q, k, v, q_offset, kv_lengths = ragged_inputs([2, 2], [3, 1], 2, extra_keys=1, seed=5)
    out = make(cls, 2)(q, k, v, causal=True, q_offset=q_offset, kv_lengths=kv_lengths)
    for row, (offset, length) in enumerate(zip(q_offset.tolist(), kv_lengths.tolist())):
        expected = loop_reference(q[row:row + 1], k[row:row + 1, :, :length], v[row:row + 1, :, :length], True, None,
                                  offset)
        torch.testing.assert_close(out[row:row + 1].double(), expected, atol=1e-5, rtol=1e-5)
    q, k, v = qkv(2, 6, 2, seed=6)
    uniform = make(cls, 2)(q, k, v, causal=True, q_offset=4)
    as_tensor = make(cls, 2)(q, k, v, causal=True, q_offset=torch.tensor([4, 4]), kv_lengths=torch.tensor([6, 6]))
    torch.testing.assert_close(as_tensor, uniform)
    torch.testing.assert_close(make(cls, 2)(q, k, v, causal=True, q_offset=torch.tensor([4, 4])), uniform)


@pytest.mark.parametrize("cls", BACKENDS)
def test_ragged_empty_rows_and_padding_queries_stay_finite(cls):
    """A row with no keys at all (an idle slot) and padding queries past a row's keys, even under a window
    that leaves them nothing to see, return finite values instead of NaN."""
    attn = windowed(cls, 1, 2)
    q, k, v, _, _ = ragged_inputs([3, 3], [0, 0], 2)
    out = attn(q, k, v, causal=True, q_offset=torch.tensor([2, 0]), kv_lengths=torch.tensor([3, 0]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, :, 0], v[0, :, 2].repeat_interleave(2, 0))  # window 1: itself only


@pytest.mark.parametrize("bias", [None, "alibi"])
def test_sdpa_groups_wide_decode_passes_without_changing_any_row(monkeypatch, bias):
    """A decode pass with many rows runs on a CPU in groups of rows, each reading keys only up to its own
    longest row: every row gets what one call over the whole padded batch gives."""
    import plugformer_attention.sdpa as sdpa

    q, k, v, q_offset, kv_lengths = ragged_inputs([1] * 21, [30 - i for i in range(21)], 2, extra_keys=5, seed=8)
    b = None if bias is None else ragged_alibi(q_offset, 1, k.shape[2])
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(sdpa.F, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(a[1].shape) or real(*a, **kw))
    grouped = make(SdpaAttention, 2)(q, k, v, causal=True, attn_bias=b, q_offset=q_offset, kv_lengths=kv_lengths)
    assert [shape[0] for shape in calls] == [8, 8, 5]
    assert [shape[2] for shape in calls] == [31, 23, 15]  # each group's longest row, not the batch's 36 keys
    monkeypatch.setattr(sdpa, "DECODE_ROW_GROUP", 64)
    whole = make(SdpaAttention, 2)(q, k, v, causal=True, attn_bias=b, q_offset=q_offset, kv_lengths=kv_lengths)
    torch.testing.assert_close(grouped, whole, atol=1e-6, rtol=1e-6)


def test_sdpa_ragged_matches_naive_in_bfloat16():
    q, k, v, q_offset, kv_lengths = ragged_inputs([1, 3, 2], [7, 0, 3], 2, extra_keys=3, dtype=torch.bfloat16)
    b = ragged_alibi(q_offset, q.shape[2], k.shape[2])
    ref = make(NaiveAttention, 2)(q, k, v, causal=True, attn_bias=b, q_offset=q_offset, kv_lengths=kv_lengths)
    got = make(SdpaAttention, 2)(q, k, v, causal=True, attn_bias=b, q_offset=q_offset, kv_lengths=kv_lengths)
    for row, n in enumerate([1, 3, 2]):
        torch.testing.assert_close(got[row, :, :n], ref[row, :, :n], **TOL[torch.bfloat16])


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 2])
def test_xformers_dense_bias_of_a_ragged_batch_means_the_contract(causal, window):
    """The dense bias xformers gets for a ragged batch, added to plain scores, equals the ragged reference."""
    q, k, v, q_offset, kv_lengths = ragged_inputs([1, 2], [4, 1], extra_keys=2)
    b = ragged_alibi(q_offset, 2, k.shape[2])
    dense = xf.dense_bias(b, (2, H, 2, k.shape[2]), q_offset, causal=causal, window=window, dtype=torch.float32,
                          device="cpu", kv_lengths=kv_lengths)
    got = make(NaiveAttention)(q, k, v, causal=False, attn_bias=dense)
    ref = windowed(NaiveAttention, window)(q, k, v, causal=causal, attn_bias=b, q_offset=q_offset,
                                           kv_lengths=kv_lengths)
    torch.testing.assert_close(got[0, :, :1], ref[0, :, :1])
    torch.testing.assert_close(got[1], ref[1])


@pytest.mark.skipif(XFORMERS_OK, reason="xformers runs here")
def test_xformers_fallback_passes_ragged_batches_on(monkeypatch):
    monkeypatch.setattr(xf, "_FALLBACK_WARNED", True)
    attn = make(xf.XformersAttention, 2, config=XformersAttentionConfig(fallback="sdpa"))
    q, k, v, q_offset, kv_lengths = ragged_inputs([1, 2, 1], [3, 0, 6], 2, extra_keys=1)
    assert_rows_match_alone(attn, q, k, v, q_offset, kv_lengths, [1, 2, 1], causal=True)


@needs_xformers
@pytest.mark.parametrize("window", [None, 3], ids=["global", "window3"])
def test_xformers_ragged_on_cuda(window):
    ref, got = gpu_pair(window, 2)
    q, k, v, q_offset, kv_lengths = (t.cuda() for t in ragged_inputs([1, 3, 2], [5, 0, 2], 2, extra_keys=3,
                                                                     dtype=torch.float16))
    out = got(q, k, v, causal=True, q_offset=q_offset, kv_lengths=kv_lengths)
    expected = ref(q, k, v, causal=True, q_offset=q_offset, kv_lengths=kv_lengths)
    for row, n in enumerate([1, 3, 2]):
        torch.testing.assert_close(out[row, :, :n], expected[row, :, :n], **GPU_TOL[torch.float16])
