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

The attention, embedding and head parameters are the core model's own (``SelfAttention``'s fused ``qkv``,
``tok_emb``, ``lm_head``) and are mapped here. A position encoding's, norm's or MLP's parameters belong to
the plugin that provides it: each declares its Hugging Face names in the ``hf_names`` capability
(``{model_type: {our name: HF name | (HF name, layout)}}``, e.g. ``plugformer_layers.hf_names``), which
decides both which architecture a model exports as and how its weights are renamed. A component with no
declaration for the architecture is refused by name. Loading is strict, so a mismatch can never pass
silently.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plugformer import ConfigError, did_you_mean, get_registries

FAMILIES = ("gpt2", "llama")
#: the capability in which a position/norm/mlp entry declares its parameters' Hugging Face names
HF_NAMES = "hf_names"
#: the layouts an ``hf_names`` declaration may ask for
LAYOUTS = ("same", "transposed", "interleaved")
#: the components import-hf chooses for each architecture (and what state_to_hf assumes when not told)
IMPORT_COMPONENTS = {"gpt2": {"position": "learned", "norm": "layernorm", "mlp": "gelu"},
                     "llama": {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu"}}
#: the base-model prefix of each architecture's tensor names
HF_PREFIX = {"gpt2": "transformer.", "llama": "model."}
#: where each norm sits: (our module, HF module), ``{i}`` the layer index; names below the prefix
NORM_PLACES = {"gpt2": (("blocks.{i}.norm_attn.", "h.{i}.ln_1."), ("blocks.{i}.norm_mlp.", "h.{i}.ln_2.")),
               "llama": (("blocks.{i}.norm_attn.", "layers.{i}.input_layernorm."),
                         ("blocks.{i}.norm_mlp.", "layers.{i}.post_attention_layernorm."))}
FINAL_NORM = {"gpt2": ("norm_f.", "ln_f."), "llama": ("norm_f.", "norm.")}
MLP_PLACE = {"gpt2": ("blocks.{i}.mlp.", "h.{i}.mlp."), "llama": ("blocks.{i}.mlp.", "layers.{i}.mlp.")}
#: architectures whose HF modules always have biases: a bias-free plugformer model exports zeros there
ALWAYS_BIASED = ("gpt2",)
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
        groups=dict(IMPORT_COMPONENTS["gpt2"]),
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
    return ImportPlan(family="llama", groups=dict(IMPORT_COMPONENTS["llama"]),
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


Rule = tuple[tuple[str, ...], str]  # (HF names, layout)


def declared_names(registries: Any, family: str, name: str) -> dict[str, dict[str, Any]]:
    """The ``hf_names`` declaration of ``family`` component ``name`` (``{}``: it declares none)."""
    return dict(registries[family].get(name).capabilities.get(HF_NAMES) or {})


def component_rules(registries: Any, components: Mapping[str, str], model_type: str) -> dict[str, dict[str, Rule]]:
    """``{family: {our parameter: (HF names, layout)}}`` for the position, norm and mlp in ``components``,
    as each declares them for ``model_type``; a ConfigError naming a component that declares nothing."""
    rules: dict[str, dict[str, Rule]] = {}
    for family in ("position", "norm", "mlp"):
        name = components[family]
        declared = declared_names(registries, family, name)
        if model_type not in declared:
            raise ConfigError(f"{family} {name!r} declares no Hugging Face {model_type} parameter names "
                              f"(its {HF_NAMES} capability covers: {', '.join(declared) or 'nothing'})")
        rules[family] = {ours: _rule(family, name, value) for ours, value in declared[model_type].items()}
    return rules


def _rule(family: str, name: str, value: Any) -> Rule:
    """``"hf"`` | ``("hf", layout)`` | ``(("a", "b"), "interleaved")`` → (HF names, layout)."""
    names, layout = (value, "same") if isinstance(value, str) else tuple(value)
    names = (names,) if isinstance(names, str) else tuple(names)
    if layout not in LAYOUTS or (len(names) == 2) != (layout == "interleaved") or len(names) not in (1, 2):
        raise ConfigError(f"{family} {name!r}: {HF_NAMES} entry {value!r} is not a name, (name, 'transposed') "
                          "or ((name_a, name_b), 'interleaved')")
    return names, layout


def _take_declared(take: _Taker, rules: Mapping[str, Rule], ours_prefix: str, hf_prefix: str,
                   out: dict[str, Any]) -> None:
    """Move the tensors ``rules`` name from ``take`` into ``out`` under our names (biases the HF model
    does not have are skipped; strict loading catches a bias the plugformer model needs)."""
    for ours, (names, layout) in rules.items():
        keys = [hf_prefix + n for n in names]
        if ours.rpartition(".")[2] == "bias" and keys[0] not in take.state:
            continue
        tensors = [take(k) for k in keys]
        if layout == "transposed":
            out[ours_prefix + ours] = tensors[0].t().contiguous()
        elif layout == "interleaved":
            out[ours_prefix + ours] = interleave_gate_up(*tensors)
        else:
            out[ours_prefix + ours] = tensors[0]


def _components_from_hf(take: _Taker, rules: Mapping[str, Mapping[str, Rule]], model_type: str, n_layers: int,
                        out: dict[str, Any]) -> None:
    """The position encoding's, every norm's and every MLP's tensors, as their plugins name them."""
    _take_declared(take, rules["position"], "position.", "", out)
    for i in range(n_layers):
        for ours, theirs in NORM_PLACES[model_type]:
            _take_declared(take, rules["norm"], ours.format(i=i), theirs.format(i=i), out)
        ours, theirs = MLP_PLACE[model_type]
        _take_declared(take, rules["mlp"], ours.format(i=i), theirs.format(i=i), out)
    _take_declared(take, rules["norm"], *FINAL_NORM[model_type], out)


def _gpt2_from_hf(hf_state: Mapping[str, Any], n_layers: int, tied: bool,
                  rules: Mapping[str, Mapping[str, Rule]]) -> dict[str, Any]:
    take = _Taker(_strip_prefix(hf_state, HF_PREFIX["gpt2"]), ignore=(".attn.bias", ".attn.masked_bias"))
    out = {"tok_emb.weight": take("wte.weight")}
    for i in range(n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj_out", "attn.c_proj")):
            out[b + ours + ".weight"] = take(h + theirs + ".weight").t().contiguous()  # Conv1D: in × out
            out[b + ours + ".bias"] = take(h + theirs + ".bias")
    _components_from_hf(take, rules, "gpt2", n_layers, out)
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


def _llama_from_hf(hf_state: Mapping[str, Any], n_layers: int, bias: bool, tied: bool,
                   rules: Mapping[str, Mapping[str, Rule]]) -> dict[str, Any]:
    import torch

    take = _Taker(_strip_prefix(hf_state, HF_PREFIX["llama"]), ignore=(".rotary_emb.inv_freq",))
    out = {"tok_emb.weight": take("embed_tokens.weight")}
    params = ("weight", "bias") if bias else ("weight",)
    for i in range(n_layers):
        h, b = f"layers.{i}.", f"blocks.{i}."
        for p in params:
            out[b + f"attn.qkv.{p}"] = torch.cat([take(h + f"self_attn.{n}_proj.{p}") for n in "qkv"], dim=0)
            out[b + f"attn.proj_out.{p}"] = take(h + f"self_attn.o_proj.{p}")
    _components_from_hf(take, rules, "llama", n_layers, out)
    out["lm_head.weight"] = _head(take, out["tok_emb.weight"], tied)
    take.check_empty()
    return out


def state_from_hf(plan: ImportPlan, hf_state: Mapping[str, Any], registries: Any = None) -> dict[str, Any]:
    """plugformer ``state_dict`` (float32) for the HF weights ``hf_state`` of the model ``plan`` describes;
    the components' parameters are renamed as their plugins declare (``registries``: this process's)."""
    n_layers = int(plan.values["model.n_layers"])
    rules = component_rules(registries or get_registries(), plan.groups, plan.family)
    if plan.family == "gpt2":
        return _gpt2_from_hf(hf_state, n_layers, plan.tie_embeddings, rules)
    return _llama_from_hf(hf_state, n_layers, bool(plan.values["model.bias"]), plan.tie_embeddings, rules)


# -- plugformer → HF --------------------------------------------------------------------------------
def _name(node: Any) -> str:
    return str(node.get("name")) if node is not None else ""


def _value(node: Any, key: str, default: Any = None) -> Any:
    value = node.get(key, default) if node is not None else default
    return getattr(value, "value", value)  # enums (e.g. mlp.approximate) as their plain value


def _exports_as(registries: Any, family: str, name: str) -> list[str]:
    return [t for t in declared_names(registries, family, name) if t in FAMILIES]


def export_family(cfg: Any, causal_objectives: tuple[str, ...] = ("clm",), registries: Any = None) -> str:
    """``gpt2`` or ``llama`` for a plugformer train config, or a ConfigError naming the component that has
    no HF equivalent. ``causal_objectives``: the objectives that train a causal LM (e.g. sft, dpo too).
    The architecture is the one the position encoding declares HF names for (``hf_names``); the norm and
    MLP must declare names for it too."""
    registries = registries or get_registries()
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
    position = _name(cfg.position)
    families = _exports_as(registries, "position", position)
    if not families:
        offered = ", ".join(f"{e.name} ({'/'.join(_exports_as(registries, 'position', e.name))})"
                            for e in registries.position if _exports_as(registries, "position", e.name))
        raise ConfigError(f"position {position!r} has no Hugging Face equivalent; exportable: {offered or 'none'}")
    for family in ("norm", "mlp"):
        name = _name(cfg[family])
        if not set(_exports_as(registries, family, name)) & set(families):
            fits = [e.name for e in registries[family] if set(_exports_as(registries, family, e.name)) & set(families)]
            raise ConfigError(f"{family} {name!r} with position {position!r} has no Hugging Face equivalent "
                              f"({'/'.join(families)} needs {family} {' or '.join(repr(f) for f in fits) or '?'})")
    norm, mlp = (set(_exports_as(registries, f, _name(cfg[f]))) for f in ("norm", "mlp"))
    return next(f for f in families if f in norm and f in mlp)


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
                              causal_objectives: tuple[str, ...] = ("clm",), registries: Any = None) -> dict[str, Any]:
    """The HF config (as keyword arguments of ``GPT2Config``/``LlamaConfig`` plus ``model_type``)."""
    family, m = export_family(cfg, causal_objectives, registries), cfg.model
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


def _put_declared(state: Mapping[str, Any], rules: Mapping[str, Rule], ours_prefix: str, hf_prefix: str,
                  out: dict[str, Any], zero_biases: bool) -> None:
    """Our tensors named by ``rules`` into ``out`` under HF names; a missing bias is skipped, or exported as
    zeros (``zero_biases``: the HF module always has one)."""
    import torch

    for ours, (names, layout) in rules.items():
        key = ours_prefix + ours
        if key in state:
            tensor = state[key].float()
        elif zero_biases and ours.rpartition(".")[2] == "bias" and key[:-4] + "weight" in state:
            tensor = torch.zeros(state[key[:-4] + "weight"].shape[0])  # a bias-free model: exact zero biases
        else:
            continue
        if layout == "transposed":
            out[hf_prefix + names[0]] = tensor.t().contiguous()
        elif layout == "interleaved":
            out[hf_prefix + names[0]], out[hf_prefix + names[1]] = split_gate_up(tensor)
        else:
            out[hf_prefix + names[0]] = tensor


def _components_to_hf(state: Mapping[str, Any], rules: Mapping[str, Mapping[str, Rule]], model_type: str,
                      n_layers: int, out: dict[str, Any]) -> None:
    """The position encoding's, every norm's and every MLP's tensors under their declared HF names."""
    prefix, zeros = HF_PREFIX[model_type], model_type in ALWAYS_BIASED
    _put_declared(state, rules["position"], "position.", prefix, out, zeros)
    for i in range(n_layers):
        for ours, theirs in NORM_PLACES[model_type]:
            _put_declared(state, rules["norm"], ours.format(i=i), prefix + theirs.format(i=i), out, zeros)
        ours, theirs = MLP_PLACE[model_type]
        _put_declared(state, rules["mlp"], ours.format(i=i), prefix + theirs.format(i=i), out, zeros)
    ours, theirs = FINAL_NORM[model_type]
    _put_declared(state, rules["norm"], ours, prefix + theirs, out, zeros)


def _gpt2_to_hf(state: Mapping[str, Any], n_layers: int, tied: bool,
                rules: Mapping[str, Mapping[str, Rule]]) -> dict[str, Any]:
    import torch

    def bias_of(key: str, width: int) -> Any:  # a bias-free plugformer model exports exact zero biases
        return state[key].float() if key in state else torch.zeros(width)

    out = {"transformer.wte.weight": state["tok_emb.weight"].float()}
    for i in range(n_layers):
        h, b = f"transformer.h.{i}.", f"blocks.{i}."
        for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj_out", "attn.c_proj")):
            w = state[b + ours + ".weight"].float()
            out[h + theirs + ".weight"] = w.t().contiguous()  # Conv1D: in × out
            out[h + theirs + ".bias"] = bias_of(b + ours + ".bias", w.shape[0])
    _components_to_hf(state, rules, "gpt2", n_layers, out)
    if not tied:
        out["lm_head.weight"] = state["lm_head.weight"].float()
    return out


def _llama_to_hf(state: Mapping[str, Any], n_layers: int, tied: bool, hf: Mapping[str, Any],
                 rules: Mapping[str, Mapping[str, Rule]]) -> dict[str, Any]:
    d, kv_width = hf["hidden_size"], hf["num_key_value_heads"] * hf["head_dim"]
    out = {"model.embed_tokens.weight": state["tok_emb.weight"].float()}
    params = ("weight", "bias") if hf["attention_bias"] else ("weight",)
    for i in range(n_layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        for p in params:
            q, k, v = state[b + f"attn.qkv.{p}"].float().split([d, kv_width, kv_width], dim=0)
            out[h + f"self_attn.q_proj.{p}"], out[h + f"self_attn.k_proj.{p}"] = q.contiguous(), k.contiguous()
            out[h + f"self_attn.v_proj.{p}"] = v.contiguous()
            out[h + f"self_attn.o_proj.{p}"] = state[b + f"attn.proj_out.{p}"].float()
    _components_to_hf(state, rules, "llama", n_layers, out)
    if not tied:
        out["lm_head.weight"] = state["lm_head.weight"].float()
    return out


def state_to_hf(hf: Mapping[str, Any], state: Mapping[str, Any], components: Mapping[str, str] | None = None,
                registries: Any = None) -> dict[str, Any]:
    """HF tensors (names as ``*ForCausalLM.save_pretrained`` writes them) for a plugformer ``state_dict``.
    ``components``: the model's ``{position, norm, mlp}`` names (default: what import-hf picks for
    ``hf["model_type"]``), renamed as their plugins declare (``registries``: this process's)."""
    n_layers = int(hf.get("n_layer") or hf.get("num_hidden_layers"))
    tied = bool(hf["tie_word_embeddings"])
    model_type = hf["model_type"]
    rules = component_rules(registries or get_registries(), components or IMPORT_COMPONENTS[model_type], model_type)
    if model_type == "gpt2":
        return _gpt2_to_hf(state, n_layers, tied, rules)
    return _llama_to_hf(state, n_layers, tied, hf, rules)
