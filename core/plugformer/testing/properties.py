"""Named reference properties: what defines a well-known technique, keyed by its registry name.

The generic contracts check what every implementation of a family must do; this table adds the
defining property of a technique, so any implementation registered under that name (the built-in,
or a third party's replacement) is held to it. A capability can opt in too: a position encoding that
declares ``relative: True`` must pass :func:`relative_invariance`. Extend :data:`NAMED` for new names.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from plugformer.interfaces import Positions
from plugformer.registry import Entry
from plugformer.testing.construct import build, config_for, devices, label, randn, tiny_dims
from plugformer.testing.reference import assert_close

Property = Callable[[Entry], None]


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str, atol: float = 1e-5) -> None:
    assert_close(actual, expected, what, atol=atol, rtol=1e-4)


def _scores(pe: torch.nn.Module, start: int, length: int, device: str) -> torch.Tensor:
    """(1, H, T, T) position-dependent part of the scores for one fixed q and k vector per head."""
    q = randn(1, 4, 1, 8, seed=20, device=device).expand(1, 4, length, 8).contiguous()
    k = randn(1, 4, 1, 8, seed=21, device=device).expand(1, 4, length, 8).contiguous()
    positions = Positions(start, length, device)
    rq, rk = pe.rotate(q, k, positions)
    scores = rq @ rk.transpose(-1, -2)
    bias = pe.attention_bias(positions, positions)
    return scores if bias is None else scores + bias.float().expand_as(scores)


def relative_invariance(entry: Entry) -> None:
    """Rotated q·k plus bias depends on positions m, n only through m - n."""
    for device in devices(entry):
        for causal in (True, False):
            pe = build(entry, tiny_dims(causal=causal)).to(device)
            what = label(entry, device=device, causal=causal)
            at_zero, shifted = _scores(pe, 0, 10, device), _scores(pe, 13, 10, device)
            _close(at_zero[..., 1:, 1:], at_zero[..., :-1, :-1], f"{what}: score(m+1, n+1) != score(m, n)", 1e-4)
            _close(shifted, at_zero, f"{what}: scores change when all positions shift by 13", 1e-4)


def rotation_preserves_norms(entry: Entry) -> None:
    """A rotary encoding is a rotation: lengths are kept and position 0 is the identity."""
    for device in devices(entry):
        pe = build(entry, tiny_dims()).to(device)
        q, k = randn(2, 4, 10, 8, seed=22, device=device), randn(2, 4, 10, 8, seed=23, device=device)
        rq, rk = pe.rotate(q, k, Positions(0, 10, device))
        what = label(entry, device=device)
        _close(rq.norm(dim=-1), q.norm(dim=-1), f"{what}: rotation changes |q|")
        _close(rk.norm(dim=-1), k.norm(dim=-1), f"{what}: rotation changes |k|")
        _close(rq[:, :, 0], q[:, :, 0], f"{what}: position 0 is not left unrotated")


def _alibi_reference_slopes(n_heads: int, max_bias: float) -> list[float]:
    """Press et al.'s slopes: a geometric sequence for 2^k heads, interleaved from 2n' otherwise."""
    def geometric(n: int) -> list[float]:
        return [2.0 ** (-max_bias * (h + 1) / n) for h in range(n)]

    base = 2 ** int(math.log2(n_heads))
    return geometric(base) + geometric(2 * base)[::2][: n_heads - base]


def alibi_slopes(entry: Entry) -> None:
    """Each head h penalises a key at distance d = m - n ≥ 0 by slope_h · d (up to a per-row constant)."""
    for device in devices(entry):
        for heads in (4, 6):
            dims = tiny_dims(n_heads=heads, n_kv_heads=heads, d_model=8 * heads)
            pe = build(entry, dims).to(device)
            max_bias = float(getattr(config_for(entry), "max_bias", 8.0))
            positions = Positions(0, 10, device)
            bias = pe.attention_bias(positions, positions)
            what = label(entry, device=device, n_heads=heads)
            assert bias is not None, f"{what}: alibi returns no attention bias"
            bias = bias.float().expand(1, heads, 10, 10)[0]
            distance = torch.arange(10)[:, None] - torch.arange(10)[None, :]
            slopes = torch.tensor(_alibi_reference_slopes(heads, max_bias))
            expected = -slopes[:, None, None] * distance.float()
            relative = bias - bias.diagonal(dim1=-2, dim2=-1)[..., :, None]  # softmax ignores row constants
            lower = (distance >= 0).expand(heads, 10, 10)
            _close(relative.cpu()[lower], expected[lower], f"{what}: biases are not -slope·distance")


def sinusoidal_formula(entry: Entry) -> None:
    """PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(p / base^(2i/d)) (Vaswani et al.)."""
    for device in devices(entry):
        dims = tiny_dims()
        pe = build(entry, dims).to(device)
        base = float(getattr(config_for(entry), "base", 10000.0))
        for start in (0, 40):
            added = pe.embed(torch.zeros(1, 12, dims.d_model, device=device), Positions(start, 12, device))[0]
            pos = torch.arange(start, start + 12, dtype=torch.float64)[:, None]
            angle = pos / base ** (torch.arange(0, dims.d_model, 2, dtype=torch.float64) / dims.d_model)
            expected = torch.empty(12, dims.d_model, dtype=torch.float64)
            expected[:, 0::2], expected[:, 1::2] = angle.sin(), angle.cos()
            _close(added, expected, f"{label(entry, device=device)}: positions {start}..{start + 11}", 1e-5)


def _normalised(entry: Entry) -> tuple[torch.Tensor, torch.Tensor, str]:
    x = 3.0 * randn(2, 5, 32, seed=24) + 1.0
    return x, build(entry, tiny_dims())(x), label(entry)


def layernorm_standardises(entry: Entry) -> None:
    """With its initial weights, LayerNorm gives each position zero mean and unit variance."""
    _, out, what = _normalised(entry)
    _close(out.mean(-1), torch.zeros(2, 5), f"{what}: mean over d_model", 1e-4)
    _close(out.var(-1, unbiased=False), torch.ones(2, 5), f"{what}: variance over d_model", 1e-3)


def rmsnorm_unit_rms(entry: Entry) -> None:
    """With its initial weights, RMSNorm rescales each position to unit RMS without recentring."""
    x, out, what = _normalised(entry)
    _close(out.pow(2).mean(-1).sqrt(), torch.ones(2, 5), f"{what}: RMS over d_model", 1e-3)
    _close(out, x / x.pow(2).mean(-1, keepdim=True).sqrt(), f"{what}: x / RMS(x)", 1e-3)


#: (family, registry name) → the properties that define the technique
NAMED: dict[tuple[str, str], tuple[Property, ...]] = {
    ("position", "rope"): (relative_invariance, rotation_preserves_norms),
    ("position", "alibi"): (relative_invariance, alibi_slopes),
    ("position", "sinusoidal"): (sinusoidal_formula,),
    ("norm", "layernorm"): (layernorm_standardises,),
    ("norm", "rmsnorm"): (rmsnorm_unit_rms,),
}

#: (family, capability) → properties every implementation declaring that capability truthy must have
BY_CAPABILITY: dict[tuple[str, str], tuple[Property, ...]] = {
    ("position", "relative"): (relative_invariance,),
}


def properties_for(entry: Entry) -> list[Property]:
    """The named and capability-selected properties that apply to ``entry``, each once."""
    found = list(NAMED.get((entry.family, entry.name), ()))
    for (family, capability), props in BY_CAPABILITY.items():
        if family == entry.family and entry.capabilities.get(capability):
            found += [p for p in props if p not in found]
    return found
