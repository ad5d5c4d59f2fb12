"""Norm and MLP contract: (…, d_model) in, same shape and dtype out, position-wise, differentiable;
MLPs honour ``dims.bias`` and ``dims.dropout`` (only while training); named norms keep their formula."""
from __future__ import annotations

from typing import Any

import pytest
import torch

from plugformer.registry import Entry
from plugformer.testing.construct import build, devices, label, randn, tiny_dims
from plugformer.testing.reference import assert_close

contract = pytest.mark.plugformer_contract


def layer(entry: Entry, device: str = "cpu", **dims: Any) -> torch.nn.Module:
    return build(entry, tiny_dims(**dims)).to(device).eval()


@contract("norm", "mlp")
def test_shape_and_dtype(entry: Entry) -> None:
    shapes = [(2, 5, 32)] + ([(3, 32), (2, 2, 5, 32)] if entry.family == "norm" else [])
    for device in devices(entry):
        module = layer(entry, device)
        for shape in shapes:
            x = randn(*shape, seed=40, device=device)
            out = module(x)
            what = label(entry, device=device, shape=shape)
            assert out.shape == x.shape, f"{what}: output shape {tuple(out.shape)}"
            assert out.dtype == x.dtype and out.device.type == device, f"{what}: output {out.dtype} on {out.device}"
            assert torch.isfinite(out).all(), f"{what}: non-finite output"
        x = randn(2, 5, 32, seed=41, device=device)
        low = module.to(torch.bfloat16)(x.to(torch.bfloat16)).detach()
        what = label(entry, device=device, dtype="bfloat16")
        assert low.dtype == torch.bfloat16, f"{what}: a bfloat16 module gives {low.dtype}"
        expected = module.float()(x).detach()
        scale = float(expected.abs().max()) + 1.0
        assert_close(low, expected, f"{what}: far from float32", atol=5e-2 * scale, rtol=5e-2)


@contract("norm", "mlp")
def test_position_wise(entry: Entry) -> None:
    """Changing the token at position 3 changes only the output at position 3."""
    for device in devices(entry):
        module = layer(entry, device)
        x = randn(2, 6, 32, seed=42, device=device)
        changed = x.clone()
        changed[:, 3] += randn(2, 32, seed=43, device=device)
        a, b = module(x), module(changed)
        what = label(entry, device=device)
        others = [0, 1, 2, 4, 5]
        assert_close(b[:, others], a[:, others], f"{what}: mixes positions")
        assert not torch.allclose(a[:, 3], b[:, 3]), f"{what}: output ignores its input"


@contract("norm", "mlp")
def test_gradients_reach_input_and_parameters(entry: Entry) -> None:
    for device in devices(entry):
        module = layer(entry, device).train()
        x = randn(2, 5, 32, seed=44, device=device).requires_grad_()
        (module(x) * randn(2, 5, 32, seed=45, device=device)).sum().backward()
        what = label(entry, device=device)
        assert x.grad is not None and torch.isfinite(x.grad).all(), f"{what}: no finite gradient for the input"
        for name, p in module.named_parameters():
            if p.requires_grad:
                assert p.grad is not None and torch.isfinite(p.grad).all(), f"{what}: no finite gradient for {name}"


@contract("mlp")
def test_mlp_honours_dims_bias(entry: Entry) -> None:
    biases = [n for n, _ in layer(entry, bias=False).named_parameters() if n.split(".")[-1] == "bias"]
    assert not biases, f"{label(entry)}: built with dims.bias=False but has {', '.join(biases)}"
    assert any(n.split(".")[-1] == "bias" for n, _ in layer(entry, bias=True).named_parameters()), \
        f"{label(entry)}: built with dims.bias=True but has no bias parameter"


@contract("mlp")
def test_mlp_dropout_only_while_training(entry: Entry) -> None:
    module = layer(entry, dropout=0.5)
    x = randn(2, 5, 32, seed=46)
    what = label(entry, dropout=0.5)
    assert_close(module(x), module(x), f"{what}: eval mode is not deterministic", atol=0, rtol=0)
    evaluated = module(x)
    torch.manual_seed(0)
    assert not torch.allclose(module.train()(x), evaluated), f"{what}: training mode ignores dims.dropout"


@contract("norm", "mlp", properties=True)
def test_named_reference_property(entry: Entry, prop: Any) -> None:
    prop(entry)
