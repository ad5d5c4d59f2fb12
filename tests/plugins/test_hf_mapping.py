"""The GPT-2/Llama ↔ plugformer mapping on its own: configs, weight layouts and refusals (no transformers)."""
from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from plugformer.errors import ConfigError
from plugformer_hf.hf_mapping import (
    export_family,
    hf_config_from_plugformer,
    interleave_gate_up,
    plan_from_hf_config,
    split_gate_up,
    state_from_hf,
    state_to_hf,
)
from plugformer.model import build_model

GPT2 = {"model_type": "gpt2", "vocab_size": 50, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64,
        "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
        "eos_token_id": 0}
LLAMA = {"model_type": "llama", "vocab_size": 50, "hidden_size": 32, "intermediate_size": 48,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
         "hidden_act": "silu", "rms_norm_eps": 1e-6, "attention_bias": False, "mlp_bias": False,
         "tie_word_embeddings": False, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}}


def test_gpt2_maps_to_learned_positions_layernorm_and_tanh_gelu():
    plan = plan_from_hf_config(GPT2)
    assert plan.groups == {"position": "learned", "norm": "layernorm", "mlp": "gelu"}
    assert plan.values["mlp.approximate"] == "tanh" and plan.values["mlp.hidden_mult"] == 4.0
    assert plan.values["model.max_seq_len"] == 64 and plan.values["model.tie_embeddings"] is True
    assert plan_from_hf_config({**GPT2, "activation_function": "gelu"}).values["mlp.approximate"] == "none"


def test_llama_maps_to_rope_rmsnorm_swiglu_with_grouped_query_heads():
    plan = plan_from_hf_config(LLAMA)
    assert plan.groups == {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"}
    v = plan.values
    assert (v["model.n_kv_heads"], v["mlp.hidden_size"], v["norm.eps"], v["position.base"]) == (2, 48, 1e-6, 5e5)
    assert v["model.bias"] is False and v["model.tie_embeddings"] is False


def test_llama_rope_settings_read_from_transformers_4_keys_too():
    legacy = {k: v for k, v in LLAMA.items() if k != "rope_parameters"}
    plan = plan_from_hf_config({**legacy, "rope_theta": 1234.0, "rope_scaling": {"type": "linear", "factor": 4.0}})
    assert plan.values["position.base"] == 1234.0
    assert (plan.values["position.scaling"], plan.values["position.scaling_factor"]) == ("linear", 4.0)


@pytest.mark.parametrize("config, field", [
    ({**GPT2, "activation_function": "relu"}, "activation_function"),
    ({**GPT2, "scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({**LLAMA, "rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}}, "rope_type"),
    ({**LLAMA, "mlp_bias": True}, "mlp_bias"),
    ({**LLAMA, "hidden_act": "gelu"}, "hidden_act"),
    ({**LLAMA, "head_dim": 16}, "head_dim"),
    ({**LLAMA, "partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({**LLAMA, "model_type": "mistral"}, "model_type"),
    ({k: v for k, v in LLAMA.items() if k != "intermediate_size"}, "intermediate_size"),
])
def test_settings_without_an_equivalent_are_one_line_errors_naming_the_field(config, field):
    with pytest.raises(ConfigError, match=field) as info:
        plan_from_hf_config(config)
    assert "\n" not in str(info.value)


def test_swiglu_gate_and_up_interleave_and_split_back():
    gate, up = torch.arange(6.0).view(3, 2), 100 + torch.arange(6.0).view(3, 2)
    fused = interleave_gate_up(gate, up)
    assert torch.equal(fused[0], gate[0]) and torch.equal(fused[1], up[0]) and torch.equal(fused[4], gate[2])
    back = split_gate_up(fused)
    assert torch.equal(back[0], gate) and torch.equal(back[1], up)


def _model(tiny_config, builtin_host, *overrides):
    torch.manual_seed(0)
    cfg = tiny_config("tokenizer=byte", *overrides)
    return cfg, build_model(cfg, builtin_host.registries, 50)


@pytest.mark.parametrize("overrides", [
    ("position=learned", "norm=layernorm", "mlp=gelu"),
    ("position=learned", "norm=layernorm", "mlp=gelu", "model.tie_embeddings=false"),
    ("position=rope", "norm=rmsnorm", "mlp=swiglu", "model.n_kv_heads=2", "model.bias=false",
     "model.tie_embeddings=false", "mlp.hidden_size=24"),
    ("position=rope", "norm=rmsnorm", "mlp=swiglu", "model.bias=true"),
])
def test_weights_survive_plugformer_to_hf_to_plugformer_exactly(tiny_config, builtin_host, overrides):
    cfg, model = _model(tiny_config, builtin_host, *overrides)
    hf = hf_config_from_plugformer(cfg, 50, 0, None)
    hf_state = state_to_hf(hf, model.state_dict())
    assert all(t.is_contiguous() for t in hf_state.values())
    back = state_from_hf(plan_from_hf_config(hf), hf_state)
    mine = model.state_dict()
    assert set(back) == set(mine)
    for key, tensor in mine.items():
        assert torch.equal(back[key], tensor), key


def test_a_bias_free_gpt2_style_model_exports_with_exact_zero_biases(tiny_config, builtin_host):
    cfg, model = _model(tiny_config, builtin_host, "position=learned", "norm=layernorm", "mlp=gelu",
                        "model.bias=false")
    hf_state = state_to_hf(hf_config_from_plugformer(cfg, 50, 0, None), model.state_dict())
    assert float(hf_state["transformer.h.0.attn.c_attn.bias"].abs().sum()) == 0.0
    assert float(hf_state["transformer.ln_f.bias"].abs().sum()) == 0.0


def test_rope_scaling_exports_linear_as_is_and_ntk_as_a_larger_base(tiny_config):
    cfg = copy.deepcopy(tiny_config("position=rope", "norm=rmsnorm", "mlp=swiglu", "position.scaling=linear",
                                    "position.scaling_factor=2.0"))
    hf = hf_config_from_plugformer(cfg, 50, 0, None)
    assert hf["rope_scaling"] == {"rope_type": "linear", "factor": 2.0} and hf["rope_theta"] == 10000.0
    OmegaConf.update(cfg, "position.scaling", "ntk")
    hf = hf_config_from_plugformer(cfg, 50, 0, None)
    head_dim = 32 // 4
    assert hf["rope_scaling"] is None and hf["rope_theta"] == pytest.approx(1e4 * 2 ** (head_dim / (head_dim - 2)))


@pytest.mark.parametrize("overrides, named", [
    (("position=alibi", "attention=naive"), "position 'alibi'"),
    (("position=sinusoidal",), "position 'sinusoidal'"),
    (("position=learned", "norm=rmsnorm"), "norm 'rmsnorm'"),
    (("position=rope", "norm=rmsnorm", "mlp=gelu"), "mlp 'gelu'"),
    (("position=learned", "norm=layernorm", "mlp=gelu", "attention.window=8"), "window=8"),
    (("position=learned", "norm=layernorm", "mlp=gelu", "objective=mlm"), "objective 'mlm'"),
    (("position=learned", "norm=layernorm", "mlp=gelu", "model.n_kv_heads=2"), "n_kv_heads"),
    (("position=rope", "norm=rmsnorm", "mlp=swiglu", "position.partial_rotary_factor=0.5"),
     "partial_rotary_factor"),
])
def test_components_without_a_hf_equivalent_are_refused_by_name(tiny_config, overrides, named):
    cfg = tiny_config(*overrides)
    with pytest.raises(ConfigError, match=named.replace("'", ".")):
        hf_config_from_plugformer(cfg, 50, 0, None)


def test_export_family_follows_the_position_encoding(tiny_config):
    assert export_family(tiny_config("position=learned", "norm=layernorm", "mlp=gelu")) == "gpt2"
    assert export_family(tiny_config("position=rope", "norm=rmsnorm", "mlp=swiglu")) == "llama"



def _registries_with_norms(fake_plugin, **norms):
    """The first-party plugins plus a third-party one registering ``norms`` (name → its ``hf_names``
    declaration, or None for none): LayerNorm under other names."""
    from importlib.metadata import entry_points

    from plugformer import hookimpl
    from plugformer.plugins import LoadSettings, PluginHost

    @hookimpl
    def plugformer_register(registries):
        for name, declared in norms.items():
            registries.norm.register(name, "plugformer_layers.modules:LayerNorm",
                                     schema="plugformer_layers.schemas:LayerNormConfig",
                                     capabilities={"hf_names": declared} if declared is not None else {})

    first_party = [ep for ep in entry_points(group="plugformer") if ep.dist and ep.dist.name == "plugformer"]
    host = PluginHost()
    host.load_entry_points([*first_party, fake_plugin("fake_norms", "norms", plugformer_register=plugformer_register)],
                           LoadSettings())
    return host.registries


def _export_cfg(norm: str):
    return OmegaConf.create({"objective": {"name": "clm"}, "attention": {"name": "sdpa", "window": None},
                             "model": {"layer_pattern": None, "layer_overrides": None},
                             "position": {"name": "learned"}, "norm": {"name": norm}, "mlp": {"name": "gelu"}})


def test_a_new_plugin_declares_its_own_hf_names_without_editing_plugformer_hf(fake_plugin, tiny_config,
                                                                               builtin_host):
    registries = _registries_with_norms(fake_plugin, my_norm={"gpt2": {"weight": "weight", "bias": "bias"}},
                                        silent_norm=None, odd_norm={"gpt2": {"weight": ("scale", "rotated")}})
    assert export_family(_export_cfg("my_norm"), registries=registries) == "gpt2"
    with pytest.raises(ConfigError, match="norm 'silent_norm' with position 'learned' has no Hugging Face "
                                          "equivalent .gpt2 needs norm 'layernorm' or 'my_norm'"):
        export_family(_export_cfg("silent_norm"), registries=registries)
    cfg, model = _model(tiny_config, builtin_host, "position=learned", "norm=layernorm", "mlp=gelu")
    hf = hf_config_from_plugformer(cfg, 50, 0, None)
    ours = {"position": "learned", "norm": "my_norm", "mlp": "gelu"}
    renamed = state_to_hf(hf, model.state_dict(), ours, registries)
    reference = state_to_hf(hf, model.state_dict())
    assert set(renamed) == set(reference) and all(torch.equal(renamed[k], reference[k]) for k in reference)
    with pytest.raises(ConfigError, match="norm 'odd_norm': hf_names entry"):
        state_to_hf(hf, model.state_dict(), {**ours, "norm": "odd_norm"}, registries)
