"""How a Hugging Face GPT-2 or Llama model corresponds to a plugformer model, both ways.

Two things are mapped:

- the *architecture*: an HF ``config.json`` becomes plugformer component choices (``position``,
  ``norm``, ``mlp``) and values (``model.d_model``, ``norm.eps``, ...) — :func:`plan_from_hf_config` —
  and a plugformer config becomes an HF config — :func:`hf_config_from_plugformer`;
- the *weights*: HF tensor names and layouts become the first-party plugins' parameter names and
  layouts — :func:`state_from_hf` — and back — :func:`state_to_hf`.

Layout differences handled here (each one changes the logits if missed):

- GPT-2 stores linear weights as ``Conv1D`` (``in × out``): transposed both ways;
- HF keeps q/k/v (Llama) as separate matrices, plugformer one fused ``qkv`` ([q; k; v] rows);
- Llama's MLP has separate ``gate_proj``/``up_proj``; plugformer's ``swiglu`` fuses them into one
  ``proj_in`` whose rows *interleave* gate and up units (row 2j gate j, row 2j+1 up j);
- GPT-2's ``gelu_new`` is the tanh approximation (``mlp.approximate=tanh``), ``gelu`` the exact one;
- Llama's rotary layout is rotate-half, which is what plugformer's ``rope`` implements, so q/k need
  no permutation.

Anything without an exact counterpart is a :class:`ConfigError` naming the field or component.
Parameter names are those of the first-party ``learned``/``rope``/``layernorm``/``rmsnorm``/``gelu``/
``swiglu`` plugins; loading is strict, so a mismatch can never pass silently.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plugformer import ConfigError, did_you_mean

FAMILIES = ("gpt2", "llama")
GPT2_TANH_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
GPT2_EXACT_ACTIVATIONS = ("gelu",)
HF_ROPE_TYPES = ("default", "linear")
#: attention backends that compute plain softmax(q kᵀ/√d) v (with no window): exportable as is
EXPORTABLE_ATTENTION = ("naive", "sdpa", "xformers")


@dataclass
class ImportPlan:
    """What an HF config becomes: the config groups to choose and the values to set in the composed config."""

    family: str
    groups: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    tie_embeddings: bool = True
    eos_token_id: int | None = None


def _first_id(value: Any) -> int | None:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def model_family(hf: Mapping[str, Any]) -> str:
    """``gpt2`` or ``llama`` from ``model_type``; any other model type is refused, naming it."""
    model_type = hf.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"config.json model_type {model_type!r} is not supported"
                          f"{did_you_mean(str(model_type), FAMILIES)}; supported: {', '.join(FAMILIES)}")
    return str(model_type)


def _require(hf: Mapping[str, Any], key: str, ok: bool, why: str) -> None:
    if not ok:
        raise ConfigError(f"config.json {key}={hf.get(key)!r} has no plugformer equivalent: {why}")


def _gpt2_plan(hf: Mapping[str, Any]) -> ImportPlan:
    d = int(hf["n_embd"])
    act = hf.get("activation_function", "gelu_new")
    if act in GPT2_TANH_ACTIVATIONS:
        approximate = "tanh"
    elif act in GPT2_EXACT_ACTIVATIONS:
        approximate = "none"
    else:
        raise ConfigError(f"config.json activation_function={act!r} has no plugformer equivalent; supported: "
                          f"{', '.join(GPT2_TANH_ACTIVATIONS + GPT2_EXACT_ACTIVATIONS)}")
    inner = hf.get("n_inner") or 4 * d
    _require(hf, "n_inner", inner % d == 0 or int(inner / d * d) == inner,
             f"the MLP width must be hidden_mult × n_embd={d}")
    _require(hf, "scale_attn_weights", hf.get("scale_attn_weights", True) is True, "scores are always scaled by 1/√d")
    _require(hf, "scale_attn_by_inverse_layer_idx", not hf.get("scale_attn_by_inverse_layer_idx", False),
             "no per-layer score scaling")
    _require(hf, "add_cross_attention", not hf.get("add_cross_attention", False), "decoder-only models only")
    tie = bool(hf.get("tie_word_embeddings", True))
    return ImportPlan(
        family="gpt2",
        groups={"position": "learned", "norm": "layernorm", "mlp": "gelu"},
        values={"model.n_layers": int(hf["n_layer"]), "model.d_model": d, "model.n_heads": int(hf["n_head"]),
                "model.n_kv_heads": None, "model.max_seq_len": int(hf["n_positions"]), "model.bias": True,
                "model.tie_embeddings": tie, "model.dropout": 0.0,
                "norm.eps": float(hf.get("layer_norm_epsilon", 1e-5)),
                "mlp.hidden_mult": inner / d, "mlp.approximate": approximate},
        tie_embeddings=tie, eos_token_id=_first_id(hf.get("eos_token_id")))


def rope_parameters(hf: Mapping[str, Any]) -> dict[str, Any]:
    """Rope settings in one dict, from transformers 5's ``rope_parameters`` or 4.x's ``rope_theta`` +
    ``rope_scaling``."""
    params = dict(hf.get("rope_parameters") or {})
    legacy = dict(hf.get("rope_scaling") or {})
    if "type" in legacy and "rope_type" not in legacy:
        legacy["rope_type"] = legacy.pop("type")
    merged = {"rope_type": "default", "rope_theta": hf.get("rope_theta", 10000.0), **legacy, **params}
    if "partial_rotary_factor" in hf and "partial_rotary_factor" not in merged:
        merged["partial_rotary_factor"] = hf["partial_rotary_factor"]
    return merged


def _llama_plan(hf: Mapping[str, Any]) -> ImportPlan:
    d, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    kv = int(hf.get("num_key_value_heads") or heads)
    _require(hf, "hidden_act", hf.get("hidden_act", "silu") == "silu", "swiglu uses silu")
    head_dim = hf.get("head_dim")
    _require(hf, "head_dim", head_dim in (None, d // heads) and d % heads == 0,
             f"head_dim must be hidden_size / num_attention_heads = {d / heads:g}")
    _require(hf, "mlp_bias", bool(hf.get("mlp_bias", False)) == bool(hf.get("attention_bias", False)),
             f"one model.bias switch covers attention and MLP (attention_bias={hf.get('attention_bias', False)})")
    rope = rope_parameters(hf)
    rope_type = rope.get("rope_type", "default")
    if rope_type not in HF_ROPE_TYPES:
        raise ConfigError(f"config.json rope_scaling.rope_type={rope_type!r} has no plugformer equivalent; "
                          f"supported: {', '.join(HF_ROPE_TYPES)}")
    if float(rope.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ConfigError(f"config.json partial_rotary_factor={rope['partial_rotary_factor']!r}: Llama rotates "
                          "whole heads (transformers' Llama has no partial rotary); only 1.0 is supported")
    values: dict[str, Any] = {
        "model.n_layers": int(hf["num_hidden_layers"]), "model.d_model": d, "model.n_heads": heads,
        "model.n_kv_heads": kv, "model.max_seq_len": int(hf["max_position_embeddings"]),
        "model.bias": bool(hf.get("attention_bias", False)), "model.dropout": 0.0,
        "model.tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        "norm.eps": float(hf.get("rms_norm_eps", 1e-6)),
        "mlp.hidden_size": int(hf["intermediate_size"]),
        "position.base": float(rope["rope_theta"]), "position.partial_rotary_factor": 1.0,
        "position.scaling": None, "position.scaling_factor": 1.0,
    }
    if rope_type == "linear":
        values["position.scaling"] = "linear"
        values["position.scaling_factor"] = float(rope["factor"])
    return ImportPlan(family="llama", groups={"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"},
                      values=values, tie_embeddings=values["model.tie_embeddings"],
                      eos_token_id=_first_id(hf.get("eos_token_id")))


def plan_from_hf_config(hf: Mapping[str, Any]) -> ImportPlan:
    """The plugformer components and values for the HF ``config.json`` ``hf``."""
    family = model_family(hf)
    try:
        return _gpt2_plan(hf) if family == "gpt2" else _llama_plan(hf)
    except KeyError as exc:
        raise ConfigError(f"config.json has no {exc.args[0]!r}, which a {family} config needs") from None


# -- weights: HF → plugformer -----------------------------------------------------------------------
def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """HF names with the base-model prefix (``transformer.``/``model.``) removed; ``lm_head`` kept."""
    return {(k.removeprefix(prefix)): v for k, v in state.items()}


class _Taker:
    """Takes tensors out of an HF state dict by name; what is left at the end was not mapped."""

    def __init__(self, state: Mapping[str, Any], ignore: tuple[str, ...] = ()):
        self.state = dict(state)
        self.ignore = ignore

    def __call__(self, key: str) -> Any:
        if key not in self.state:
            raise ConfigError(f"model weights have no {key!r} (the config.json says it should)")
        return self.state.pop(key).float()

    def maybe(self, key: str) -> Any:
        return self(key) if key in self.state else None

    def check_empty(self) -> None:
        left = sorted(k for k in self.state if not k.endswith(self.ignore))
        if left:
            raise ConfigError(f"model weights hold {len(left)} tensor(s) with no plugformer equivalent, e.g. "
                              f"{left[0]!r}")


def _head(take: _Taker, embedding: Any, tied: bool) -> Any:
    """The LM head: the embedding itself when tied (a stored copy is dropped), else its own matrix."""
    head = take.maybe("lm_head.weight")
    if tied or head is None:
        if not tied:
            raise ConfigError("model weights have no 'lm_head.weight' but config.json says "
                              "tie_word_embeddings=false")
        return embedding
    return head


def _gpt2_from_hf(hf_state: Mapping[str, Any], n_layers: int, tied: bool) -> dict[str, Any]:
    take = _Taker(_strip_prefix(hf_state, "transformer."), ignore=(".attn.bias", ".attn.masked_bias"))
    out = {"tok_emb.weight": take("wte.weight"), "position.wpe.weight": take("wpe.weight")}
    for i in range(n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for ours, theirs, conv in (("norm_attn", "ln_1", False), ("attn.qkv", "attn.c_attn", True),
                                   ("attn.proj_out", "attn.c_proj", True), ("norm_mlp", "ln_2", False),
                                   ("mlp.proj_in", "mlp.c_fc", True), ("mlp.proj_out", "mlp.c_proj", True)):
            w = take(h + theirs + ".weight")
            out[b + ours + ".weight"] = w.t().contiguous() if conv else w
            out[b + ours + ".bias"] = take(h + theirs + ".bias")
    out["norm_f.weight"], out["norm_f.bias"] = take("ln_f.weight"), take("ln_f.bias")
    out["lm_head.weight"] = _head(take, out["tok_emb.weight"], tied)
    take.check_empty()
    return out


def interleave_gate_up(gate: Any, up: Any) -> Any:
    """[gate; up] (two (H, …) tensors) → one (2H, …) tensor whose rows alternate gate j, up j (swiglu's layout)."""
    import torch

    return torch.stack((gate, up), dim=1).flatten(0, 1)


def split_gate_up(fused: Any) -> tuple[Any, Any]:
    """Inverse of :func:`interleave_gate_up`."""
    pairs = fused.unflatten(0, (-1, 2))
    return pairs[:, 0].contiguous(), pairs[:, 1].contiguous()


def _llama_from_hf(hf_state: Mapping[str, Any], n_layers: int, bias: bool, tied: bool) -> dict[str, Any]:
    import torch

    take = _Taker(_strip_prefix(hf_state, "model."), ignore=(".rotary_emb.inv_freq",))
    out = {"tok_emb.weight": take("embed_tokens.weight")}
    params = ("weight", "bias") if bias else ("weight",)
    for i in range(n_layers):
        h, b = f"layers.{i}.", f"blocks.{i}."
        out[b + "norm_attn.weight"] = take(h + "input_layernorm.weight")
        out[b + "norm_mlp.weight"] = take(h + "post_attention_layernorm.weight")
        for p in params:
            out[b + f"attn.qkv.{p}"] = torch.cat([take(h + f"self_attn.{n}_proj.{p}") for n in "qkv"], dim=0)
            out[b + f"attn.proj_out.{p}"] = take(h + f"self_attn.o_proj.{p}")
            out[b + f"mlp.proj_in.{p}"] = interleave_gate_up(take(h + f"mlp.gate_proj.{p}"),
                                                             take(h + f"mlp.up_proj.{p}"))
            out[b + f"mlp.proj_out.{p}"] = take(h + f"mlp.down_proj.{p}")
    out["norm_f.weight"] = take("norm.weight")
    out["lm_head.weight"] = _head(take, out["tok_emb.weight"], tied)
    take.check_empty()
    return out


def state_from_hf(plan: ImportPlan, hf_state: Mapping[str, Any]) -> dict[str, Any]:
    """plugformer ``state_dict`` (float32) for the HF weights ``hf_state`` of the model ``plan`` describes."""
    n_layers = int(plan.values["model.n_layers"])
    if plan.family == "gpt2":
        return _gpt2_from_hf(hf_state, n_layers, plan.tie_embeddings)
    return _llama_from_hf(hf_state, n_layers, bool(plan.values["model.bias"]), plan.tie_embeddings)


# -- plugformer → HF --------------------------------------------------------------------------------
def _name(node: Any) -> str:
    return str(node.get("name")) if node is not None else ""


def _value(node: Any, key: str, default: Any = None) -> Any:
    value = node.get(key, default) if node is not None else default
    return getattr(value, "value", value)  # enums (e.g. mlp.approximate) as their plain value


def export_family(cfg: Any, causal_objectives: tuple[str, ...] = ("clm",)) -> str:
    """``gpt2`` or ``llama`` for a plugformer train config, or a ConfigError naming the component that has
    no HF equivalent. ``causal_objectives``: the objectives that train a causal LM (e.g. sft, dpo too)."""
    objective = _name(cfg.get("objective"))
    if objective not in causal_objectives:
        raise ConfigError(f"objective {objective!r} has no Hugging Face causal-LM equivalent (exportable: "
                          f"{', '.join(causal_objectives)})")
    attention = _name(cfg.attention)
    if attention not in EXPORTABLE_ATTENTION:
        raise ConfigError(f"attention {attention!r} has no Hugging Face equivalent; exportable: "
                          f"{', '.join(EXPORTABLE_ATTENTION)}")
    if _value(cfg.attention, "window") is not None:
        raise ConfigError(f"attention {attention!r} with window={_value(cfg.attention, 'window')} (sliding-window "
                          "attention) has no GPT-2/Llama equivalent")
    for key in ("layer_pattern", "layer_overrides"):
        if cfg.model.get(key):
            raise ConfigError(f"model.{key} (per-layer components) has no GPT-2/Llama equivalent")
    position, norm, mlp = _name(cfg.position), _name(cfg.norm), _name(cfg.mlp)
    wanted = {"learned": ("gpt2", "layernorm", "gelu"), "rope": ("llama", "rmsnorm", "swiglu")}
    if position not in wanted:
        raise ConfigError(f"position {position!r} has no Hugging Face equivalent; exportable: learned (GPT-2), "
                          "rope (Llama)")
    family, want_norm, want_mlp = wanted[position]
    if norm != want_norm:
        raise ConfigError(f"norm {norm!r} with position {position!r} has no Hugging Face equivalent "
                          f"({family} needs norm {want_norm!r})")
    if mlp != want_mlp:
        raise ConfigError(f"mlp {mlp!r} with position {position!r} has no Hugging Face equivalent "
                          f"({family} needs mlp {want_mlp!r})")
    return family


def swiglu_width(mlp: Any, d_model: int) -> int:
    """The swiglu hidden size a config builds (its ``hidden_size``, else Llama's rounded ⅔ rule)."""
    if _value(mlp, "hidden_size") is not None:
        return int(_value(mlp, "hidden_size"))
    multiple = int(_value(mlp, "multiple_of", 256))
    base = int(2 * float(_value(mlp, "hidden_mult", 4.0)) * d_model / 3)
    return multiple * -(-base // multiple)


def _rope_export(position: Any, head_dim: int) -> dict[str, Any]:
    factor_ = float(_value(position, "partial_rotary_factor", 1.0))
    if factor_ != 1.0:
        raise ConfigError(f"position 'rope' with partial_rotary_factor={factor_:g} has no Llama equivalent "
                          "(transformers' Llama rotates whole heads)")
    base = float(_value(position, "base", 10000.0))
    scaling, factor = _value(position, "scaling"), float(_value(position, "scaling_factor", 1.0))
    # 4.x's keys (rope_theta, rope_scaling): transformers 5 reads them too, converting to rope_parameters
    if scaling is None or factor == 1.0:
        return {"rope_theta": base, "rope_scaling": None}
    if scaling == "linear":
        return {"rope_theta": base, "rope_scaling": {"rope_type": "linear", "factor": factor}}
    if scaling == "ntk":  # static NTK-aware scaling is plain rope with a larger base
        return {"rope_theta": base * factor ** (head_dim / (head_dim - 2)), "rope_scaling": None}
    raise ConfigError(f"position 'rope' scaling={scaling!r} has no Llama equivalent; exportable: linear, ntk")


def hf_config_from_plugformer(cfg: Any, vocab_size: int, eos_id: int | None, pad_id: int | None,
                              causal_objectives: tuple[str, ...] = ("clm",)) -> dict[str, Any]:
    """The HF config (as keyword arguments of ``GPT2Config``/``LlamaConfig`` plus ``model_type``)."""
    family, m = export_family(cfg, causal_objectives), cfg.model
    d, heads = int(m.d_model), int(m.n_heads)
    kv = int(m.n_kv_heads or heads)
    max_len = int(m.max_seq_len or cfg.data.seq_len)
    common = {"vocab_size": vocab_size, "eos_token_id": eos_id, "bos_token_id": eos_id, "pad_token_id": pad_id,
              "tie_word_embeddings": bool(m.tie_embeddings), "architectures": [], "dtype": "float32"}
    if family == "gpt2":
        if kv != heads:
            raise ConfigError(f"model.n_kv_heads={kv} (grouped-query attention) has no GPT-2 equivalent")
        return {**common, "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": d, "n_layer":
                int(m.n_layers), "n_head": heads, "n_positions": max_len,
                "n_inner": int(float(_value(cfg.mlp, "hidden_mult", 4.0)) * d),
                "activation_function": "gelu_new" if _value(cfg.mlp, "approximate", "tanh") == "tanh" else "gelu",
                "layer_norm_epsilon": float(_value(cfg.norm, "eps", 1e-5)),
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    return {**common, "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": d,
            "num_hidden_layers": int(m.n_layers), "num_attention_heads": heads, "num_key_value_heads": kv,
            "head_dim": d // heads, "intermediate_size": swiglu_width(cfg.mlp, d), "hidden_act": "silu",
            "max_position_embeddings": max_len, "rms_norm_eps": float(_value(cfg.norm, "eps", 1e-5)),
            "attention_bias": bool(m.bias), "mlp_bias": bool(m.bias),
            **_rope_export(cfg.position, d // heads)}


def _gpt2_to_hf(state: Mapping[str, Any], n_layers: int, tied: bool) -> dict[str, Any]:
    import torch

    def bias_of(key: str, width: int) -> Any:  # a bias-free plugformer model exports exact zero biases
        return state[key].float() if key in state else torch.zeros(width)

    out = {"transformer.wte.weight": state["tok_emb.weight"].float(),
           "transformer.wpe.weight": state["position.wpe.weight"].float()}
    for i in range(n_layers):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        for ours, theirs, conv in (("norm_attn", "ln_1", False), ("attn.qkv", "attn.c_attn", True),
                                   ("attn.proj_out", "attn.c_proj", True), ("norm_mlp", "ln_2", False),
                                   ("mlp.proj_in", "mlp.c_fc", True), ("mlp.proj_out", "mlp.c_proj", True)):
            w = state[b + ours + ".weight"].float()
            out[h + theirs + ".weight"] = w.t().contiguous() if conv else w
            out[h + theirs + ".bias"] = bias_of(b + ours + ".bias", w.shape[0])
    out["transformer.ln_f.weight"] = state["norm_f.weight"].float()
    out["transformer.ln_f.bias"] = bias_of("norm_f.bias", state["norm_f.weight"].shape[0])
    if not tied:
        out["lm_head.weight"] = state["lm_head.weight"].float()
    return out


def _llama_to_hf(state: Mapping[str, Any], n_layers: int, tied: bool, hf: Mapping[str, Any]) -> dict[str, Any]:
    d, kv_width = hf["hidden_size"], hf["num_key_value_heads"] * hf["head_dim"]
    out = {"model.embed_tokens.weight": state["tok_emb.weight"].float(),
           "model.norm.weight": state["norm_f.weight"].float()}
    params = ("weight", "bias") if hf["attention_bias"] else ("weight",)
    for i in range(n_layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        out[h + "input_layernorm.weight"] = state[b + "norm_attn.weight"].float()
        out[h + "post_attention_layernorm.weight"] = state[b + "norm_mlp.weight"].float()
        for p in params:
            q, k, v = state[b + f"attn.qkv.{p}"].float().split([d, kv_width, kv_width], dim=0)
            out[h + f"self_attn.q_proj.{p}"], out[h + f"self_attn.k_proj.{p}"] = q.contiguous(), k.contiguous()
            out[h + f"self_attn.v_proj.{p}"] = v.contiguous()
            out[h + f"self_attn.o_proj.{p}"] = state[b + f"attn.proj_out.{p}"].float()
            out[h + f"mlp.gate_proj.{p}"], out[h + f"mlp.up_proj.{p}"] = split_gate_up(
                state[b + f"mlp.proj_in.{p}"].float())
            out[h + f"mlp.down_proj.{p}"] = state[b + f"mlp.proj_out.{p}"].float()
    if not tied:
        out["lm_head.weight"] = state["lm_head.weight"].float()
    return out


def state_to_hf(hf: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
    """HF tensors (names as ``*ForCausalLM.save_pretrained`` writes them) for a plugformer ``state_dict``."""
    n_layers = int(hf.get("n_layer") or hf.get("num_hidden_layers"))
    tied = bool(hf["tie_word_embeddings"])
    if hf["model_type"] == "gpt2":
        return _gpt2_to_hf(state, n_layers, tied)
    return _llama_to_hf(state, n_layers, tied, hf)
