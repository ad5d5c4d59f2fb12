"""Tests for the built-in norms (layernorm, rmsnorm) and MLPs (gelu, relu, swiglu) of plugformer_layers."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from plugformer.interfaces import ModelDims
from plugformer_layers.modules import GeluMLP, LayerNorm, ReluMLP, RMSNorm, SwiGLU, swiglu_hidden_size
from plugformer_layers.schemas import GeluMLPConfig, LayerNormConfig, ReluMLPConfig, RMSNormConfig, SwiGLUConfig


def dims(bias: bool = True, dropout: float = 0.0, d_model: int = 8) -> ModelDims:
    return ModelDims(vocab_size=16, d_model=d_model, n_heads=2, n_kv_heads=2, max_seq_len=16,
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


# ---- rmsnorm -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_rmsnorm_matches_formula_and_has_weight_only(bias):
    torch.manual_seed(0)
    norm = RMSNorm(RMSNormConfig(eps=1e-6), dims(bias=bias))
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(2, 3, 8) * 5 + 3
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert {n for n, _ in norm.named_parameters()} == {"weight"}
    assert norm.eps == 1e-6


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


# ---- relu mlp ------------------------------------------------------------------------------------

def test_relu_mlp_matches_formula():
    torch.manual_seed(0)
    mlp = ReluMLP(ReluMLPConfig(), dims()).eval()
    assert mlp.proj_in.out_features == 32 and mlp.proj_out.in_features == 32  # default hidden = 4 × d
    x = torch.randn(2, 3, 8)
    h = torch.relu(x @ mlp.proj_in.weight.T + mlp.proj_in.bias)
    torch.testing.assert_close(mlp(x), h @ mlp.proj_out.weight.T + mlp.proj_out.bias)


def test_relu_mlp_bias_follows_model():
    mlp = ReluMLP(ReluMLPConfig(hidden_mult=2.0), dims(bias=False))
    assert mlp.proj_in.bias is None and mlp.proj_out.bias is None and mlp.proj_in.out_features == 16


# ---- swiglu --------------------------------------------------------------------------------------

@pytest.mark.parametrize("d_model, config, hidden", [
    (256, SwiGLUConfig(), 768),                          # ⌊2/3·4·256⌋ = 682 → next multiple of 256
    (4096, SwiGLUConfig(), 11008),                       # Llama-7B
    (192, SwiGLUConfig(multiple_of=1), 512),             # ⅔·4·192 = 512 exactly, no float round-up
    (8, SwiGLUConfig(hidden_mult=3.0, multiple_of=4), 16),
    (256, SwiGLUConfig(hidden_size=100), 100),            # an explicit size wins
])
def test_swiglu_hidden_size_rule(d_model, config, hidden):
    assert swiglu_hidden_size(config, d_model) == hidden


@pytest.mark.parametrize("config", [SwiGLUConfig(hidden_size=0), SwiGLUConfig(multiple_of=0)])
def test_swiglu_rejects_nonpositive_sizes(config):
    with pytest.raises(ValueError, match="must be positive"):
        swiglu_hidden_size(config, 8)


def test_swiglu_matches_formula_shape_and_dtype():
    torch.manual_seed(0)
    mlp = SwiGLU(SwiGLUConfig(hidden_size=12), dims()).eval()
    assert (mlp.proj_in.out_features, mlp.proj_out.in_features) == (24, 12)
    x = torch.randn(2, 3, 8)
    h = x @ mlp.proj_in.weight.T + mlp.proj_in.bias
    gate, up = h[..., 0::2], h[..., 1::2]  # interleaved rows: gate unit j at 2j, up unit j at 2j+1
    torch.testing.assert_close(mlp(x), (F.silu(gate) * up) @ mlp.proj_out.weight.T + mlp.proj_out.bias)
    y = mlp.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.shape == (2, 3, 8) and y.dtype == torch.bfloat16


def test_swiglu_column_row_shards_add_up_to_the_full_output():
    """The ``colwise_rowwise`` claim: shard proj_in by output rows and proj_out by input columns,
    run each shard's forward on its slice, sum the partial outputs (+ bias once) = the full result."""
    torch.manual_seed(0)
    mlp = SwiGLU(SwiGLUConfig(hidden_size=12), dims()).eval()
    x = torch.randn(2, 3, 8)
    shards = 2
    w_in, b_in = mlp.proj_in.weight.chunk(shards), mlp.proj_in.bias.chunk(shards)
    w_out = mlp.proj_out.weight.chunk(shards, dim=1)
    partial = []
    for k in range(shards):
        gate, up = F.linear(x, w_in[k], b_in[k]).unflatten(-1, (-1, 2)).unbind(-1)
        partial.append(F.linear(F.silu(gate) * up, w_out[k]))
    torch.testing.assert_close(sum(partial) + mlp.proj_out.bias, mlp(x))


def test_swiglu_bias_dropout_and_depth_scaled_name():
    torch.manual_seed(0)
    mlp = SwiGLU(SwiGLUConfig(hidden_size=16), dims(bias=False, dropout=0.5))
    assert mlp.proj_in.bias is None and mlp.proj_out.bias is None
    assert "proj_out.weight" in dict(mlp.named_parameters())
    x = torch.randn(4, 8)
    mlp.eval()
    expected = mlp(x)
    mlp.train()
    assert not torch.allclose(mlp(x), expected)


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
    expected = {("norm", "layernorm"): (LayerNorm, LayerNormConfig), ("norm", "rmsnorm"): (RMSNorm, RMSNormConfig),
                ("mlp", "gelu"): (GeluMLP, GeluMLPConfig), ("mlp", "relu"): (ReluMLP, ReluMLPConfig),
                ("mlp", "swiglu"): (SwiGLU, SwiGLUConfig)}
    for (family, name), (impl, schema) in expected.items():
        entry = registries[family].get(name)
        assert (entry.load(), entry.load_schema()) == (impl, schema)
        assert entry.capabilities["tensor_parallel"] == ("replicate" if family == "norm" else "colwise_rowwise")
        assert entry.capabilities["devices"] == ["cpu", "cuda"]


@pytest.mark.parametrize("norm, mlp", [("rmsnorm", "swiglu"), ("layernorm", "relu")])
def test_composed_model_builds_and_trains(tiny_config, builtin_host, norm, mlp):
    """Selected by config, built by the core into its Transformer: forward, backward, depth-scaled init."""
    from plugformer.model import build_model

    cfg = tiny_config(f"norm={norm}", f"mlp={mlp}", "model.n_layers=2")
    torch.manual_seed(0)
    model = build_model(cfg, builtin_host.registries, 32)
    block = model.blocks[0]
    assert type(block.norm_mlp).__name__ == {"rmsnorm": "RMSNorm", "layernorm": "LayerNorm"}[norm]
    assert type(block.mlp).__name__ == {"swiglu": "SwiGLU", "relu": "ReluMLP"}[mlp]
    assert block.mlp.proj_out.weight.std().item() < 0.02 * 0.75  # scaled by 1/√(2·layers) = 0.5
    logits = model(torch.randint(0, 32, (2, 5)))
    assert logits.shape == (2, 5, 32)
    logits.sum().backward()
    assert block.mlp.proj_in.weight.grad is not None
