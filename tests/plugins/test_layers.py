"""Tests for the built-in norm (layernorm) and MLP (gelu) of plugformer_layers."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from plugformer.interfaces import ModelDims
from plugformer_layers.modules import GeluMLP, LayerNorm
from plugformer_layers.schemas import GeluMLPConfig, LayerNormConfig


def dims(bias: bool = True, dropout: float = 0.0) -> ModelDims:
    return ModelDims(vocab_size=16, d_model=8, n_heads=2, n_kv_heads=2, max_seq_len=16,
                     dropout=dropout, bias=bias)


# ---- layernorm -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_normalises_and_follows_model_bias(bias):
    torch.manual_seed(0)
    norm = LayerNorm(LayerNormConfig(eps=1e-6), dims(bias=bias))
    x = torch.randn(2, 3, 8) * 5 + 3
    y = norm(x)
    assert y.shape == x.shape and norm.eps == 1e-6
    torch.testing.assert_close(y.mean(-1), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(2, 3), atol=1e-4, rtol=0)
    assert (norm.bias is not None) == bias
    assert {n for n, _ in norm.named_parameters()} == ({"weight", "bias"} if bias else {"weight"})


def test_layernorm_matches_functional_with_trained_weights():
    torch.manual_seed(0)
    norm = LayerNorm(LayerNormConfig(), dims())
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(4, 8)
    torch.testing.assert_close(norm(x), F.layer_norm(x, (8,), norm.weight, norm.bias, 1e-5))


# ---- gelu mlp ------------------------------------------------------------------------------------

@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu_mlp_matches_formula(approximate):
    torch.manual_seed(0)
    mlp = GeluMLP(GeluMLPConfig(hidden_mult=2.0, approximate=approximate), dims()).eval()
    assert mlp.proj_in.out_features == 16 and mlp.proj_out.in_features == 16  # hidden = mult × d
    x = torch.randn(2, 3, 8)
    h = F.gelu(x @ mlp.proj_in.weight.T + mlp.proj_in.bias, approximate=approximate)
    torch.testing.assert_close(mlp(x), h @ mlp.proj_out.weight.T + mlp.proj_out.bias)


def test_gelu_mlp_bias_and_depth_scaled_name():
    mlp = GeluMLP(GeluMLPConfig(), dims(bias=False))
    assert mlp.proj_in.bias is None and mlp.proj_out.bias is None
    assert any("proj_out" in n for n, _ in mlp.named_parameters())  # the core's depth-scaled init finds it


def test_gelu_mlp_dropout_only_in_training():
    torch.manual_seed(0)
    mlp = GeluMLP(GeluMLPConfig(), dims(dropout=0.5))
    x = torch.randn(4, 8)
    mlp.eval()
    torch.testing.assert_close(mlp(x), mlp(x))
    expected = mlp(x)
    mlp.train()
    assert not torch.allclose(mlp(x), expected)


def test_gelu_mlp_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="approximate"):
        GeluMLP(GeluMLPConfig(approximate="erf"), dims())


# ---- registration --------------------------------------------------------------------------------

def test_registration_is_torch_free_and_resolves():
    code = ("import sys, plugformer, plugformer_layers as p\n"
            "r = plugformer.Registries(); p.plugformer_register(registries=r)\n"
            "assert 'torch' not in sys.modules, 'registration imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True)

    import plugformer
    import plugformer_layers

    registries = plugformer.Registries()
    plugformer_layers.plugformer_register(registries=registries)
    assert registries.norm.get("layernorm").load() is LayerNorm
    assert registries.mlp.get("gelu").load() is GeluMLP
    assert registries.norm.get("layernorm").load_schema() is LayerNormConfig
    assert registries.mlp.get("gelu").load_schema() is GeluMLPConfig
