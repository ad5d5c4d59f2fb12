"""Tests for the built-in positional encodings: each against its defining formula or property."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

from plugformer.interfaces import ModelDims, Positions
from plugformer_position.learned import LearnedPosition
from plugformer_position.rope import RotaryPosition
from plugformer_position.schemas import LearnedPositionConfig, RopeConfig, SinusoidalPositionConfig
from plugformer_position.sinusoidal import SinusoidalPosition


def dims(d_model: int = 32, n_heads: int = 2, max_seq_len: int = 16) -> ModelDims:
    return ModelDims(vocab_size=16, d_model=d_model, n_heads=n_heads, n_kv_heads=n_heads,
                     max_seq_len=max_seq_len)


def rope(max_seq_len: int = 16, base: float = 10000.0) -> RotaryPosition:
    return RotaryPosition(RopeConfig(base=base), dims(max_seq_len=max_seq_len))


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
    assert all(n in out.stdout for n in ("learned", "sinusoidal", "rope"))

    import plugformer
    import plugformer_position

    registries = plugformer.Registries()
    plugformer_position.plugformer_register(registries=registries)
    for name, cls in [("learned", LearnedPosition), ("sinusoidal", SinusoidalPosition), ("rope", RotaryPosition)]:
        entry = registries.position.get(name)
        assert entry.load() is cls
        cls(entry.load_schema()(), dims())  # the schema's defaults construct the encoding
