"""Position-encoding contract: shapes and dtypes at every injection point, decoding offsets that agree
with the full pass (what the KV cache relies on), and the claims an encoding declares (``extrapolates``,
``injects``, ``parameters``, ``needs_attention``), plus the named reference properties of well-known
encodings (RoPE, ALiBi, sinusoidal; see :mod:`plugformer.testing.properties`). Encodings declaring
``ragged`` (plugin API 1.1) must give each row of a ragged batch (``Positions.rows``) what that row's
positions give on their own.
"""
from __future__ import annotations

from typing import Any

import pytest
import torch

from plugformer.interfaces import Positions
from plugformer.registry import Entry
from plugformer.testing.construct import build, devices, label, randn, tiny_dims
from plugformer.testing.reference import assert_close

contract = pytest.mark.plugformer_contract
B, T = 2, 12
#: how each injection point may be named in an ``injects`` declaration
INJECTION_NAMES = {"embed": ("embed",), "rotate": ("rotate",), "bias": ("bias", "attention_bias")}


def encoding(entry: Entry, device: str, **dims: Any) -> Any:
    return build(entry, tiny_dims(**dims)).to(device)


def inputs(device: str, length: int = T, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Token embeddings (B, T, 32), queries (B, 4, T, 8) and grouped keys (B, 2, T, 8)."""
    return (randn(B, length, 32, seed=30, device=device, dtype=dtype),
            randn(B, 4, length, 8, seed=31, device=device, dtype=dtype),
            randn(B, 2, length, 8, seed=32, device=device, dtype=dtype))


def full_bias(bias: torch.Tensor | None, tq: int, tk: int) -> torch.Tensor | None:
    return None if bias is None else bias.float().expand(B, 4, tq, tk)


@contract("position")
def test_shapes_and_dtypes_at_every_injection_point(entry: Entry) -> None:
    for device in devices(entry):
        for causal in (True, False):
            pe = encoding(entry, device, causal=causal)
            positions = Positions(0, T, device)
            for dtype in (torch.float32, torch.bfloat16):
                x, q, k = inputs(device, dtype=dtype)
                what = label(entry, device=device, dtype=dtype, causal=causal)
                out = pe.embed(x, positions)
                assert out.shape == x.shape and out.dtype == dtype, \
                    f"{what}: embed gives {tuple(out.shape)} {out.dtype}, expected {tuple(x.shape)} {dtype}"
                rq, rk = pe.rotate(q, k, positions)
                assert rq.shape == q.shape and rk.shape == k.shape, f"{what}: rotate changes shapes"
                assert rq.dtype == dtype and rk.dtype == dtype, f"{what}: rotate gives {rq.dtype}/{rk.dtype}"
            bias = pe.attention_bias(positions, positions)
            if bias is not None:
                what = label(entry, device=device, causal=causal)
                assert bias.is_floating_point(), f"{what}: attention_bias dtype {bias.dtype} is not floating"
                assert torch.broadcast_shapes(bias.shape, (B, 4, T, T)) == (B, 4, T, T), \
                    f"{what}: attention_bias {tuple(bias.shape)} does not broadcast to (B, H, Tq, Tk)"
                assert bias.device.type == device, f"{what}: attention_bias on {bias.device}"
                assert not torch.isnan(bias).any(), f"{what}: attention_bias has NaN"


@contract("position")
def test_decoding_offsets_match_the_full_pass(entry: Entry) -> None:
    """Positions ``s .. T-1`` (the KV-cache steps) give exactly the full pass's values at those positions."""
    for device in devices(entry):
        pe = encoding(entry, device)
        x, q, k = inputs(device)
        everything = Positions(0, T, device)
        full_x, (full_q, full_k) = pe.embed(x, everything), pe.rotate(q, k, everything)
        all_bias = full_bias(pe.attention_bias(everything, everything), T, T)
        for start in (5, T - 1):
            part = Positions(start, T - start, device)
            what = label(entry, device=device, positions=f"{start}..{T - 1}")
            assert_close(pe.embed(x[:, start:], part), full_x[:, start:], f"{what}: embed differs from the full pass")
            rq, rk = pe.rotate(q[:, :, start:], k[:, :, start:], part)
            assert_close(rq, full_q[:, :, start:], f"{what}: rotated q differs from the full pass")
            assert_close(rk, full_k[:, :, start:], f"{what}: rotated k differs from the full pass")
            bias = full_bias(pe.attention_bias(part, everything), T - start, T)
            assert (bias is None) == (all_bias is None), f"{what}: attention_bias is None for only one pass"
            if bias is not None:
                assert_close(bias, all_bias[:, :, start:], f"{what}: attention_bias rows differ from the full pass")


#: per-row positions of a ragged batch: a decoding row, a fresh prompt, a row whose padding repeats its last position
RAGGED_ROWS = ((5, 6, 7, 8), (0, 1, 2, 3), (11, 12, 12, 12))


@contract("position", needs=("ragged",))
def test_ragged_rows_match_their_own_positions(entry: Entry) -> None:
    """With ragged ``Positions.rows`` (queries; keys uniform ``0 .. Tk-1``), every row's embedding, rotated q
    and k and bias row equal what each of its positions gives alone in a uniform batch."""
    for device in devices(entry):
        for causal in (True, False):
            pe = encoding(entry, device, causal=causal)
            rows = torch.tensor(RAGGED_ROWS, device=device)
            n, length = rows.shape
            positions, keys = Positions.ragged(rows, int(rows.min()), int(rows.max()) + 1), Positions(0, 16, device)
            x = randn(n, length, 32, seed=33, device=device)
            q, k = randn(n, 4, length, 8, seed=34, device=device), randn(n, 2, length, 8, seed=35, device=device)
            what = label(entry, device=device, causal=causal, rows=RAGGED_ROWS)
            out, (rq, rk) = pe.embed(x, positions), pe.rotate(q, k, positions)
            assert out.shape == x.shape and rq.shape == q.shape and rk.shape == k.shape, f"{what}: shapes change"
            bias = pe.attention_bias(positions, keys)
            if bias is not None:
                assert torch.broadcast_shapes(bias.shape, (n, 4, length, 16)) == (n, 4, length, 16), \
                    f"{what}: ragged attention_bias {tuple(bias.shape)} does not broadcast to (B, H, Tq, Tk)"
                bias = bias.float().expand(n, 4, length, 16)
            for b in range(n):
                for t, p in enumerate(RAGGED_ROWS[b]):
                    at, where = Positions(p, 1, device), f"{what}: row {b}, position {p}"
                    assert_close(out[b, t], pe.embed(x[b:b + 1, t:t + 1], at)[0, 0], f"{where}: embed")
                    aq, ak = pe.rotate(q[b:b + 1, :, t:t + 1], k[b:b + 1, :, t:t + 1], at)
                    assert_close(rq[b, :, t], aq[0, :, 0], f"{where}: rotated q")
                    assert_close(rk[b, :, t], ak[0, :, 0], f"{where}: rotated k")
                    alone = pe.attention_bias(at, keys)
                    assert (bias is None) == (alone is None), f"{where}: attention_bias is None for only one pass"
                    if bias is not None:
                        assert_close(bias[b, :, t], alone.float().expand(1, 4, 1, 16)[0, :, 0], f"{where}: bias")


@contract("position", needs=("extrapolates",))
def test_extrapolates_beyond_max_seq_len(entry: Entry) -> None:
    """Declared ``extrapolates``: positions past ``max_seq_len`` work and continue the full pass."""
    for device in devices(entry):
        pe = encoding(entry, device)
        limit = tiny_dims().max_seq_len
        length = limit + 6
        x, q, k = inputs(device, length=length)
        everything, tail = Positions(0, length, device), Positions(limit - 2, 8, device)
        what = label(entry, device=device, positions=f"{limit - 2}..{limit + 5}", max_seq_len=limit)
        try:
            full_x, (full_q, full_k) = pe.embed(x, everything), pe.rotate(q, k, everything)
            part_x, (part_q, part_k) = pe.embed(x[:, -8:], tail), pe.rotate(q[:, :, -8:], k[:, :, -8:], tail)
            bias = pe.attention_bias(tail, everything)
        except Exception as exc:  # noqa: BLE001 - any error breaks the declared claim
            pytest.fail(f"{what}: declares extrapolates but fails: {type(exc).__name__}: {exc}")
        for got, want, name in ((part_x, full_x[:, -8:], "embed"), (part_q, full_q[:, :, -8:], "rotated q"),
                                (part_k, full_k[:, :, -8:], "rotated k")):
            assert torch.isfinite(got).all(), f"{what}: non-finite {name}"
            assert_close(got, want, f"{what}: {name} differs from the full pass")
        assert bias is None or not torch.isnan(bias).any(), f"{what}: attention_bias has NaN"


@contract("position", declares=("injects",))
def test_injection_points_match_the_declaration(entry: Entry) -> None:
    """Declared injection points change something; undeclared ones are the identity (or no bias)."""
    declared = set(entry.capabilities["injects"])
    for device in devices(entry):
        pe = encoding(entry, device)
        x, q, k = inputs(device)
        positions = Positions(0, T, device)
        rq, rk = pe.rotate(q, k, positions)
        acts = {"embed": not torch.equal(pe.embed(x, positions), x),
                "rotate": not (torch.equal(rq, q) and torch.equal(rk, k)),
                "bias": pe.attention_bias(positions, positions) is not None}
        for point, names in INJECTION_NAMES.items():
            claimed = bool(declared.intersection(names))
            assert acts[point] == claimed, (f"{label(entry, device=device)}: declares injects={sorted(declared)} "
                                            f"but {point} {'does' if acts[point] else 'does not'} act")


@contract("position", declares=("parameters",))
def test_parameters_match_the_declaration(entry: Entry) -> None:
    has = any(p.requires_grad for p in encoding(entry, "cpu").parameters())
    claim = entry.capabilities["parameters"]
    assert has == bool(claim), \
        f"{label(entry)}: declares parameters={claim} but has{'' if has else ' no'} trainable ones"


@contract("position")
def test_attention_bias_need_is_declared(entry: Entry) -> None:
    """An encoding returning a bias declares ``needs_attention: [attention_bias]`` (and only then)."""
    device = devices(entry)[0]
    positions = Positions(0, T, device)
    gives = encoding(entry, device).attention_bias(positions, positions) is not None
    needs = "attention_bias" in entry.capabilities.get("needs_attention", [])
    assert gives == needs, (f"{label(entry)}: attention_bias {'returns' if gives else 'returns no'} bias but "
                            f"needs_attention {'lists' if needs else 'does not list'} attention_bias")


@contract("position", properties=True)
def test_named_reference_property(entry: Entry, prop: Any) -> None:
    prop(entry)
