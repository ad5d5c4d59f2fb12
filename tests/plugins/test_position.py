"""Tests for the built-in positional encodings: each against its defining formula or property."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from plugformer.interfaces import ModelDims, PositionEncoding, Positions
from plugformer_position.alibi import AlibiPosition, alibi_slopes
from plugformer_position.learned import LearnedPosition
from plugformer_position.none import NoPosition
from plugformer_position.rope import RotaryPosition, rope_cos_sin
from plugformer_position.schemas import (AlibiConfig, LearnedPositionConfig, RopeConfig, RopeScaling,
                                         SinusoidalPositionConfig)
from plugformer_position.sinusoidal import SinusoidalPosition


def dims(d_model: int = 32, n_heads: int = 2, max_seq_len: int = 16, causal: bool = True) -> ModelDims:
    return ModelDims(vocab_size=16, d_model=d_model, n_heads=n_heads, n_kv_heads=n_heads,
                     max_seq_len=max_seq_len, causal=causal)


def rope(max_seq_len: int = 16, base: float = 10000.0, **options) -> RotaryPosition:
    return RotaryPosition(RopeConfig(base=base, **options), dims(max_seq_len=max_seq_len))


# ---- rope ---------------------------------------------------------------------------------------

def rotated_score(r: RotaryPosition, q: torch.Tensor, k: torch.Tensor, m: int, n: int) -> torch.Tensor:
    """q rotated to position m dotted with k rotated to position n."""
    qm, _ = r.rotate(q, q, Positions(m, 1))
    _, kn = r.rotate(k, k, Positions(n, 1))
    return (qm * kn).sum(-1)


@pytest.mark.parametrize("m,n,shift", [(3, 1, 5), (0, 7, 4), (2, 2, 9), (10, 4, 20)])
def test_rope_scores_depend_only_on_relative_position(m, n, shift):
    torch.manual_seed(0)
    r = rope()
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    torch.testing.assert_close(rotated_score(r, q, k, m, n), rotated_score(r, q, k, m + shift, n + shift),
                               atol=1e-4, rtol=1e-4)
    if m != n:  # and it does depend on the distance
        assert not torch.allclose(rotated_score(r, q, k, m, n), rotated_score(r, q, k, m, m))


def test_rope_preserves_norms_and_identity_at_zero():
    torch.manual_seed(0)
    r = rope()
    q, k = torch.randn(2, 2, 12, 16), torch.randn(2, 2, 12, 16)
    qr, kr = r.rotate(q, k, Positions(0, 12))
    torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))
    torch.testing.assert_close(kr.norm(dim=-1), k.norm(dim=-1))
    torch.testing.assert_close(qr[:, :, 0], q[:, :, 0])  # position 0 is no rotation


def test_rope_matches_rotate_half_pairs():
    """Channel pair (i, i + D/2) turns by angle pos · base^(-2i/D), as a complex multiplication."""
    torch.manual_seed(0)
    r, d = rope(base=100.0), 16
    x, pos = torch.randn(1, 1, 5, d), Positions(3, 5)
    got, _ = r.rotate(x, x, pos)
    freq = 100.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double())
    z = z * torch.polar(torch.ones(5, d // 2, dtype=torch.float64), pos.tensor.double()[:, None] * freq)
    torch.testing.assert_close(got.double(), torch.cat((z.real, z.imag), dim=-1), atol=1e-5, rtol=1e-5)


def test_rope_beyond_cache_matches_a_longer_cache():
    torch.manual_seed(0)
    q, k, pos = torch.randn(1, 2, 6, 16), torch.randn(1, 1, 6, 16), Positions(14, 6)  # GQA shapes
    short, long = rope(max_seq_len=8), rope(max_seq_len=64)
    for a, b in zip(short.rotate(q, k, pos), long.rotate(q, k, pos)):
        torch.testing.assert_close(a, b)


def test_rope_keeps_dtype_and_is_not_checkpointed():
    r = rope()
    q = torch.randn(1, 2, 4, 16, dtype=torch.bfloat16)
    qr, kr = r.rotate(q, q, Positions(0, 4))
    assert qr.dtype == kr.dtype == torch.bfloat16
    assert r.cos_cached.dtype == torch.float32
    assert dict(r.state_dict()) == {}


def test_rope_rejects_odd_head_dim():
    with pytest.raises(ValueError, match="even head_dim"):
        RotaryPosition(RopeConfig(), dims(d_model=18, n_heads=2))


# ---- rope options --------------------------------------------------------------------------------

@pytest.mark.parametrize("factor,rotated", [(0.5, 8), (0.25, 4), (0.3, 4), (1.0, 16)])
def test_partial_rotary_leaves_the_other_channels_untouched(factor, rotated):
    torch.manual_seed(0)
    r = rope(partial_rotary_factor=factor)  # head_dim 16
    assert r.rotary_dim == rotated
    q, k = torch.randn(2, 2, 6, 16), torch.randn(2, 2, 6, 16)
    qr, kr = r.rotate(q, k, Positions(3, 6))
    torch.testing.assert_close(qr[..., rotated:], q[..., rotated:], rtol=0, atol=0)
    torch.testing.assert_close(kr[..., rotated:], k[..., rotated:], rtol=0, atol=0)
    # the rotated channels are exactly full rope of a rotated-width head
    full = RotaryPosition(RopeConfig(), dims(d_model=2 * rotated, n_heads=2))
    torch.testing.assert_close(qr[..., :rotated], full.rotate(q[..., :rotated], q[..., :rotated], Positions(3, 6))[0])


@pytest.mark.parametrize("m,n,shift", [(3, 1, 5), (0, 7, 4)])
def test_partial_rotary_keeps_relative_positions(m, n, shift):
    torch.manual_seed(0)
    r = rope(partial_rotary_factor=0.5)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)
    torch.testing.assert_close(rotated_score(r, q, k, m, n), rotated_score(r, q, k, m + shift, n + shift),
                               atol=1e-4, rtol=1e-4)
    assert not torch.allclose(rotated_score(r, q, k, m, n), rotated_score(r, q, k, m, m))


@pytest.mark.parametrize("factor", [0.0, -0.5, 1.5, 0.05])
def test_partial_rotary_rejects_bad_factors(factor):
    with pytest.raises(ValueError, match="partial_rotary_factor"):
        rope(partial_rotary_factor=factor)


def test_partial_rotary_allows_odd_head_dim():
    r = RotaryPosition(RopeConfig(partial_rotary_factor=0.5), dims(d_model=18, n_heads=2))  # head_dim 9
    assert r.rotary_dim == 4
    q = torch.randn(1, 2, 3, 9)
    assert r.rotate(q, q, Positions(0, 3))[0].shape == q.shape


def test_linear_scaling_is_rope_at_scaled_positions():
    """Factor 2: position p gets the angles unscaled rope gives position p / 2 (fractional ones too)."""
    torch.manual_seed(0)
    scaled = rope(scaling=RopeScaling.linear, scaling_factor=2.0)
    x, pos = torch.randn(1, 2, 24, 16), Positions(0, 24)  # beyond the 16 cached positions too
    cos, sin = rope_cos_sin(pos.tensor.double() / 2, 16, 10000.0)
    expected = x * cos + torch.cat((-x[..., 8:], x[..., :8]), dim=-1) * sin
    torch.testing.assert_close(scaled.rotate(x, x, pos)[0], expected, atol=1e-5, rtol=1e-5)
    # whole positions: 2p under factor 2 is plain rope at p
    got = scaled.rotate(x[:, :, :8], x[:, :, :8], Positions(0, 8))[0][:, :, ::2]
    torch.testing.assert_close(got, rope().rotate(x[:, :, :8:2], x[:, :, :8:2], Positions(0, 4))[0])


@pytest.mark.parametrize("factor", [2.0, 8.0])
def test_ntk_scaling_raises_the_base(factor):
    d = 16
    r = rope(base=10000.0, scaling="ntk", scaling_factor=factor)  # plain strings work too (YAML)
    assert r.base == pytest.approx(10000.0 * factor ** (d / (d - 2)))
    torch.testing.assert_close(r.cos_cached, rope(base=r.base).cos_cached)
    partial = rope(scaling=RopeScaling.ntk, scaling_factor=factor, partial_rotary_factor=0.5)
    assert partial.base == pytest.approx(10000.0 * factor ** (8 / 6))  # d is the rotated width
    assert rope(scaling=RopeScaling.linear, scaling_factor=factor).base == 10000.0


def test_scaling_factor_one_and_none_are_plain_rope():
    plain = rope()
    for options in ({"scaling": RopeScaling.ntk}, {"scaling": RopeScaling.linear}, {"scaling_factor": 4.0}):
        torch.testing.assert_close(rope(**options).cos_cached, plain.cos_cached)


def test_rope_rejects_bad_scaling():
    with pytest.raises(ValueError, match="scaling_factor must be > 0"):
        rope(scaling=RopeScaling.linear, scaling_factor=0.0)
    with pytest.raises(ValueError, match="scaling must be"):
        rope(scaling="yarn")


# ---- alibi ---------------------------------------------------------------------------------------

def test_alibi_slopes_power_of_two():
    """8 heads: the geometric sequence 2^-1, 2^-2, …, 2^-8."""
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -i for i in range(1, 9)]))
    torch.testing.assert_close(alibi_slopes(4), torch.tensor([2.0 ** -i for i in (2, 4, 6, 8)]))


def test_alibi_slopes_non_power_of_two():
    """6 heads: the 4-head slopes, then every other slope of the 8-head sequence, as many as missing."""
    expected = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(expected))
    assert len(alibi_slopes(12)) == 12 and len(set(alibi_slopes(12).tolist())) == 12
    torch.testing.assert_close(alibi_slopes(1), torch.tensor([2.0 ** -8]))


def test_alibi_bias_values_causal():
    p = AlibiPosition(AlibiConfig(), dims(n_heads=8))
    q, k = Positions(5, 2), Positions(0, 7)  # decoding: 2 new queries over 7 keys
    bias = p.attention_bias(q, k)
    assert bias.shape == (1, 8, 2, 7) and bias.dtype == torch.float32
    slopes = alibi_slopes(8)
    for h in range(8):
        for i, qp in enumerate(range(5, 7)):
            for j in range(7):
                assert bias[0, h, i, j].item() == pytest.approx(-slopes[h].item() * (qp - j))
    assert (bias[0, :, 1, 6] == 0).all()  # the diagonal is free


def test_alibi_bias_symmetric_for_encoders():
    p = AlibiPosition(AlibiConfig(), dims(n_heads=6, d_model=36, causal=False))
    bias = p.attention_bias(Positions(0, 5), Positions(0, 5))
    assert bias.shape == (1, 6, 5, 5)
    torch.testing.assert_close(bias, bias.transpose(-1, -2))
    assert (bias <= 0).all()
    assert bias[0, 0, 0, 4].item() == pytest.approx(-4 * alibi_slopes(6)[0].item())


def test_alibi_has_no_state_and_touches_nothing_else():
    p = AlibiPosition(None, dims())
    assert list(p.parameters()) == [] and dict(p.state_dict()) == {}
    x, q = torch.randn(1, 3, 32), torch.randn(1, 2, 3, 16)
    assert p.embed(x, Positions(0, 3)) is x and p.rotate(q, q, Positions(0, 3))[0] is q


# ---- none (NoPE) ---------------------------------------------------------------------------------

def test_none_leaves_everything_unchanged():
    p = NoPosition(None, dims())
    assert isinstance(p, PositionEncoding)
    x, q, k = torch.randn(2, 3, 32), torch.randn(2, 2, 3, 16), torch.randn(2, 1, 3, 16)
    pos = Positions(4, 3)
    assert torch.equal(p.embed(x, pos), x)
    qr, kr = p.rotate(q, k, pos)
    assert torch.equal(qr, q) and torch.equal(kr, k)
    assert p.attention_bias(pos, Positions(0, 7)) is None
    assert list(p.parameters()) == [] and dict(p.state_dict()) == {}


# ---- sinusoidal ----------------------------------------------------------------------------------

def formula(pos: int, i: int, d: int) -> float:
    """PE(pos, 2j) = sin(pos / 10000^(2j/d)), PE(pos, 2j+1) = cos(pos / 10000^(2j/d))."""
    angle = pos / 10000 ** ((i - i % 2) / d)
    return math.sin(angle) if i % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("d_model", [8, 7])
def test_sinusoidal_matches_formula_and_extends(d_model):
    p = SinusoidalPosition(SinusoidalPositionConfig(), dims(d_model=d_model, n_heads=1, max_seq_len=8))
    pos = Positions(4, 8)  # half cached, half computed on the fly
    x = torch.randn(1, 8, d_model)
    expected = torch.tensor([[formula(t, i, d_model) for i in range(d_model)] for t in pos.tensor.tolist()])
    torch.testing.assert_close(p.embed(x, pos) - x, expected.unsqueeze(0), atol=1e-5, rtol=1e-5)


def test_sinusoidal_is_fixed_and_not_checkpointed():
    p = SinusoidalPosition(SinusoidalPositionConfig(), dims())
    assert list(p.parameters()) == [] and dict(p.state_dict()) == {}
    x = torch.zeros(1, 3, 32, dtype=torch.bfloat16)
    assert p.embed(x, Positions(0, 3)).dtype == torch.bfloat16


# ---- learned -------------------------------------------------------------------------------------

def test_learned_adds_one_vector_per_position():
    torch.manual_seed(0)
    p = LearnedPosition(LearnedPositionConfig(), dims(max_seq_len=16))
    x, pos = torch.randn(2, 5, 32), Positions(3, 5)
    torch.testing.assert_close(p.embed(x, pos), x + p.wpe.weight[3:8])
    assert "wpe.weight" in p.state_dict()
    assert 0.015 < p.wpe.weight.std().item() < 0.025  # N(0, 0.02²) init


def test_learned_errors_clearly_beyond_max_seq_len():
    p = LearnedPosition(LearnedPositionConfig(), dims(max_seq_len=8))
    p.embed(torch.zeros(1, 8, 32), Positions(0, 8))  # the last valid position is fine
    with pytest.raises(ValueError, match="max_seq_len=8"):
        p.embed(torch.zeros(1, 2, 32), Positions(7, 2))


# ---- registration --------------------------------------------------------------------------------

def test_registration_is_torch_free_and_resolves():
    code = ("import sys, plugformer, plugformer_position as p\n"
            "r = plugformer.Registries(); p.plugformer_register(registries=r)\n"
            "assert 'torch' not in sys.modules, 'registration imported torch'\n"
            "print(r.position.names())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert all(n in out.stdout for n in ("learned", "sinusoidal", "rope", "alibi", "none"))

    import plugformer
    import plugformer_position

    registries = plugformer.Registries()
    plugformer_position.plugformer_register(registries=registries)
    for name, cls in [("learned", LearnedPosition), ("sinusoidal", SinusoidalPosition), ("rope", RotaryPosition),
                      ("alibi", AlibiPosition), ("none", NoPosition)]:
        entry = registries.position.get(name)
        assert entry.load() is cls
        schema = entry.load_schema()
        cls(schema() if schema else None, dims())  # the schema's defaults construct the encoding
    assert registries.position.get("alibi").capabilities["needs_attention"] == ["attention_bias"]
    assert registries.position.get("none").load_schema() is None


# ---- ragged batches (plugin API 1.1): each row at its own positions ------------------------------

#: three rows at their own positions (the engine's batch: row 2 is short, its padding repeats a position)
RAGGED_ROWS = torch.tensor([[3, 4, 5, 6], [0, 1, 2, 3], [9, 10, 10, 10]])


def ragged(rows: torch.Tensor = RAGGED_ROWS) -> Positions:
    return Positions.ragged(rows, int(rows.min()), int(rows.max()) + 1)


def assert_ragged_rows_match_uniform(pe: PositionEncoding, rows: torch.Tensor = RAGGED_ROWS, d_model: int = 32,
                                     heads: int = 2, head_dim: int = 16) -> None:
    """embed, rotate and attention_bias of a ragged batch equal, row by row, each position's uniform result."""
    torch.manual_seed(0)
    B, T = rows.shape
    x, q, k = torch.randn(B, T, d_model), torch.randn(B, heads, T, head_dim), torch.randn(B, 1, T, head_dim)
    positions, keys = ragged(rows), Positions(0, int(rows.max()) + 1)
    out = pe.embed(x, positions)
    rq, rk = pe.rotate(q, k, positions)
    bias = pe.attention_bias(positions, keys)
    assert out.shape == x.shape and rq.shape == q.shape and rk.shape == k.shape
    for b in range(B):
        for t in range(T):
            at = Positions(int(rows[b, t]), 1)
            torch.testing.assert_close(out[b, t], pe.embed(x[b:b + 1, t:t + 1], at)[0, 0])
            one_q, one_k = pe.rotate(q[b:b + 1, :, t:t + 1], k[b:b + 1, :, t:t + 1], at)
            torch.testing.assert_close(rq[b, :, t], one_q[0, :, 0])
            torch.testing.assert_close(rk[b, :, t], one_k[0, :, 0])
            if bias is not None:
                alone = pe.attention_bias(at, keys).expand(1, heads, 1, -1)
                torch.testing.assert_close(bias.expand(B, heads, T, -1)[b, :, t], alone[0, :, 0])
    if bias is not None:
        assert bias.shape == (B, heads, T, keys.length)


@pytest.mark.parametrize("options", [{}, {"partial_rotary_factor": 0.5}, {"scaling": RopeScaling.linear,
                                     "scaling_factor": 2.0}, {"scaling": RopeScaling.ntk, "scaling_factor": 4.0}],
                         ids=["plain", "partial", "linear", "ntk"])
@pytest.mark.parametrize("max_seq_len", [16, 8], ids=["cached", "beyond-cache"])
def test_rope_ragged_rows_rotate_by_their_own_positions(options, max_seq_len):
    assert_ragged_rows_match_uniform(rope(max_seq_len=max_seq_len, **options))
    cos, _ = rope(max_seq_len=max_seq_len, **options).cos_sin(ragged())
    assert cos.shape[:3] == (3, 1, 4)  # (B, 1, T, d): broadcast over heads


@pytest.mark.parametrize("causal", [True, False])
def test_alibi_ragged_bias_has_a_row_per_sequence(causal):
    assert_ragged_rows_match_uniform(AlibiPosition(AlibiConfig(), dims(causal=causal)))


@pytest.mark.parametrize("max_seq_len", [16, 8], ids=["cached", "beyond-cache"])
def test_sinusoidal_ragged_rows_add_their_own_positions(max_seq_len):
    assert_ragged_rows_match_uniform(SinusoidalPosition(SinusoidalPositionConfig(), dims(max_seq_len=max_seq_len)))


def test_learned_ragged_rows_and_its_limit():
    pe = LearnedPosition(LearnedPositionConfig(), dims(max_seq_len=16))
    assert_ragged_rows_match_uniform(pe)
    with pytest.raises(ValueError, match="position 10 is beyond model.max_seq_len=8"):
        LearnedPosition(LearnedPositionConfig(), dims(max_seq_len=8)).embed(torch.zeros(3, 4, 32), ragged())


def test_none_ragged_is_the_identity():
    assert_ragged_rows_match_uniform(NoPosition(None, dims()))


def test_every_builtin_encoding_declares_ragged():
    import plugformer
    import plugformer_position

    registries = plugformer.Registries()
    plugformer_position.plugformer_register(registries=registries)
    assert all(entry.capabilities.get("ragged") is True for entry in registries.position)
