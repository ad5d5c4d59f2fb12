"""A plugformer LoRA adapter (PEFT files on plugformer's module names) → the same adapter on the exported
Hugging Face model's module names, so that ``peft.PeftModel.from_pretrained(AutoModelForCausalLM
.from_pretrained(out), out / "adapter")`` applies it unmerged, as plugformer does.

The conversion follows the base-weight export in :mod:`plugformer_hf.hf_mapping` exactly (the MLP's HF
module names come from its plugin's ``hf_names`` declaration, as for the base weights):

- LoRA computes ``W x + s · B A x``: ``A`` acts on the layer's input, ``B`` produces its output rows. A
  fused plugformer layer split into several HF layers (Llama's ``qkv`` → ``q_proj``/``k_proj``/``v_proj``,
  swiglu's interleaved ``proj_in`` → ``gate_proj``/``up_proj``) gives each part the same ``A`` and the rows
  of ``B`` (and of DoRA's per-output magnitude) that the base export gives its weight — exact, since every
  output row of ``B A`` depends on that row of ``B`` alone;
- GPT-2's ``Conv1D`` layers keep ``A``/``B`` as they are (peft stores them like ``nn.Linear``'s and only
  transposes the merged delta): the config says ``fan_in_fan_out=true``;
- ``lora_alpha``, ``r``, ``use_rslora``, ``use_dora`` carry over unchanged (a split keeps ``r``, so the scale).

A target with no HF counterpart, per-module rank/alpha patterns, trained biases and ``modules_to_save``
are refused in one line naming them.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from plugformer import ConfigError, get_registries
from plugformer.checkpoint import PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE
from plugformer_hf.hf_mapping import HF_PREFIX, IMPORT_COMPONENTS, MLP_PLACE, Rule, component_rules, split_gate_up

PEFT_PREFIX = "base_model.model."
EXPORTABLE_PEFT_TYPES = ("LORA",)
#: adapter entries whose saved adapter is plain LoRA on a full-precision base (qlora's base is 4-bit)
EXPORTABLE_ADAPTERS = ("lora",)
#: tensors of one adapted module in PEFT's saved naming: <module>.<suffix>
A_SUFFIX, B_SUFFIX, MAGNITUDE_SUFFIX = "lora_A.weight", "lora_B.weight", "lora_magnitude_vector"
_BLOCK = re.compile(r"^blocks\.(\d+)\.(attn\.qkv|attn\.proj_out|mlp\.proj_in|mlp\.proj_out)$")

RowPick = Callable[[Any], Any]  # the output rows (of B, of a magnitude vector) one HF module keeps


def _all_rows(t: Any) -> Any:
    return t


def hf_targets(hf: Mapping[str, Any], module: str, mlp_rules: Mapping[str, Rule] | None = None
               ) -> list[tuple[str, RowPick]]:
    """The HF modules (full names in ``*ForCausalLM``) a plugformer ``module`` becomes, each with the output
    rows it keeps; a ConfigError when it has none. The MLP's modules are named as the MLP plugin declares
    (``mlp_rules``: its ``hf_names`` rules for this architecture; default: the first-party MLP's)."""
    match = _BLOCK.match(module)
    if match is None:
        raise ConfigError(f"adapter target '{module}' has no Hugging Face counterpart (exportable: "
                          "blocks.N.attn.qkv, blocks.N.attn.proj_out, blocks.N.mlp.proj_in, blocks.N.mlp.proj_out)")
    i, part = match.groups()
    model_type = hf["model_type"]
    if part.startswith("mlp."):
        return _mlp_targets(model_type, int(i), part.removeprefix("mlp."), mlp_rules)
    if model_type == "gpt2":
        theirs = {"attn.qkv": "attn.c_attn", "attn.proj_out": "attn.c_proj"}[part]
        return [(f"transformer.h.{i}.{theirs}", _all_rows)]
    h = f"model.layers.{i}."
    if part == "attn.qkv":
        d, kv = hf["hidden_size"], hf["num_key_value_heads"] * hf["head_dim"]
        bounds = {"q": (0, d), "k": (d, d + kv), "v": (d + kv, d + 2 * kv)}
        return [(f"{h}self_attn.{n}_proj", lambda t, lo=lo, hi=hi: t[lo:hi].contiguous())
                for n, (lo, hi) in bounds.items()]
    return [(h + "self_attn.o_proj", _all_rows)]


def _mlp_targets(model_type: str, layer: int, linear: str, mlp_rules: Mapping[str, Rule] | None
                 ) -> list[tuple[str, RowPick]]:
    """The HF modules of MLP linear ``linear`` (``proj_in``/``proj_out``) of block ``layer``, from the rule
    its plugin declares for ``linear.weight`` (an interleaved pair keeps alternate rows each)."""
    if mlp_rules is None:
        mlp_rules = component_rules(get_registries(), IMPORT_COMPONENTS[model_type], model_type)["mlp"]
    rule = mlp_rules.get(f"{linear}.weight")
    if rule is None:
        raise ConfigError(f"adapter target 'blocks.{layer}.mlp.{linear}': the MLP declares no Hugging Face name "
                          f"for {linear}.weight")
    names, layout = rule
    place = HF_PREFIX[model_type] + MLP_PLACE[model_type][1].format(i=layer)
    modules = [place + n.removesuffix(".weight") for n in names]
    if layout == "interleaved":
        return [(modules[0], lambda t: split_gate_up(t)[0]), (modules[1], lambda t: split_gate_up(t)[1])]
    return [(modules[0], _all_rows)]


def _module_and_suffix(key: str) -> tuple[str, str]:
    """``base_model.model.<module>.<suffix>`` → (module, suffix); suffix one of lora_A/lora_B/magnitude."""
    name = key.removeprefix(PEFT_PREFIX)
    for suffix in (A_SUFFIX, B_SUFFIX, MAGNITUDE_SUFFIX + ".weight", MAGNITUDE_SUFFIX):
        if name.endswith("." + suffix):
            return name[: -len(suffix) - 1], suffix
    raise ConfigError(f"adapter tensor '{key}' is not a LoRA A/B matrix or DoRA magnitude; only those export "
                      "(trained biases or modules_to_save have no place in the exported adapter)")


def check_exportable(config: Mapping[str, Any], directory: Path) -> None:
    """Refuse, in one line, a PEFT config whose meaning the renamed adapter could not keep."""
    peft_type = config.get("peft_type")
    if peft_type not in EXPORTABLE_PEFT_TYPES:
        raise ConfigError(f"adapter '{directory}' has PEFT type {peft_type!r}; exportable: "
                          f"{', '.join(EXPORTABLE_PEFT_TYPES)}")
    for key in ("rank_pattern", "alpha_pattern"):
        if config.get(key):
            raise ConfigError(f"adapter '{directory}' sets {key}={config[key]!r} (per-module values on plugformer "
                              "names), which this export does not rename; train with one r and alpha")
    if config.get("modules_to_save"):
        raise ConfigError(f"adapter '{directory}' has modules_to_save={config['modules_to_save']!r}, which has no "
                          "exported counterpart")
    if config.get("bias", "none") != "none" or config.get("lora_bias"):
        raise ConfigError(f"adapter '{directory}' trains biases (bias={config.get('bias')!r}); only bias='none' "
                          "adapters export (the trained biases would change the exported base)")
    if config.get("layers_to_transform") is not None or config.get("layer_replication") is not None:
        raise ConfigError(f"adapter '{directory}' uses layers_to_transform/layer_replication, which this export "
                          "does not rename")


def convert_adapter(hf: Mapping[str, Any], config: Mapping[str, Any], tensors: Mapping[str, Any], directory: Path,
                    mlp_rules: Mapping[str, Rule] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(adapter_config.json, adapter tensors) for the HF model ``hf`` describes, from a plugformer adapter
    (``mlp_rules``: the model's MLP's ``hf_names`` rules, see :func:`hf_targets`)."""
    check_exportable(config, directory)
    by_module: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        module, suffix = _module_and_suffix(key)
        by_module.setdefault(module, {})[suffix] = tensor
    listed = config.get("target_modules")
    targets = [str(t) for t in listed] if isinstance(listed, list) else sorted(by_module)
    unknown = [t for t in targets if _BLOCK.match(t) is None]
    if unknown:
        raise ConfigError(f"adapter target(s) {', '.join(unknown)} have no Hugging Face counterpart (exportable: "
                          "blocks.N.attn.qkv, blocks.N.attn.proj_out, blocks.N.mlp.proj_in, blocks.N.mlp.proj_out)")
    out: dict[str, Any] = {}
    hf_names: list[str] = []
    for module, parts in sorted(by_module.items()):
        if A_SUFFIX not in parts or B_SUFFIX not in parts:
            raise ConfigError(f"adapter '{directory}' has no {A_SUFFIX}/{B_SUFFIX} pair for '{module}'")
        for name, rows in hf_targets(hf, module, mlp_rules):
            hf_names.append(name)
            out[f"{PEFT_PREFIX}{name}.{A_SUFFIX}"] = parts[A_SUFFIX].float().clone()  # one copy per split part
            out[f"{PEFT_PREFIX}{name}.{B_SUFFIX}"] = rows(parts[B_SUFFIX].float()).contiguous()
            for suffix in (MAGNITUDE_SUFFIX + ".weight", MAGNITUDE_SUFFIX):
                if suffix in parts:
                    out[f"{PEFT_PREFIX}{name}.{suffix}"] = rows(parts[suffix].float()).contiguous()
    new_config = {**config, "target_modules": hf_names, "base_model_name_or_path": None, "auto_mapping": None,
                  "task_type": "CAUSAL_LM", "fan_in_fan_out": hf["model_type"] == "gpt2", "inference_mode": True}
    return new_config, out


def read_adapter(directory: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(adapter_config.json, tensors) of a PEFT adapter directory; a ConfigError when it is not one."""
    from safetensors.torch import load_file

    if not (directory / PEFT_CONFIG_FILE).is_file() or not (directory / PEFT_WEIGHTS_FILE).is_file():
        raise ConfigError(f"adapter '{directory}' is not a PEFT adapter directory (expected {PEFT_CONFIG_FILE} and "
                          f"{PEFT_WEIGHTS_FILE}, e.g. <checkpoint>/adapter)")
    return json.loads((directory / PEFT_CONFIG_FILE).read_text()), load_file(str(directory / PEFT_WEIGHTS_FILE))


def adapter_to_export(ckpt: Path, cfg: Any, adapter: str | Path | None) -> Path | None:
    """The adapter directory to export with ``ckpt``: ``adapter`` (on a plain base), the checkpoint's own
    ``adapter/`` when it was trained with ``lora``, or None. Refuses qlora-trained checkpoints and an
    ``adapter=`` on a checkpoint that already carries one."""
    trained_with = str((cfg.get("adapter") or {}).get("name", "none"))
    if adapter is not None:
        if trained_with != "none":
            raise ConfigError(f"adapter={adapter} needs a plain base checkpoint, but '{ckpt}' was trained with "
                              f"adapter={trained_with} (its own adapter/ exports with it; drop adapter=)")
        return Path(adapter).expanduser()
    if trained_with == "none":
        return None
    if trained_with not in EXPORTABLE_ADAPTERS:
        raise ConfigError(f"checkpoint '{ckpt}' was trained with adapter '{trained_with}', whose base weights "
                          f"are not full precision; export the base it started from with adapter={ckpt}/adapter "
                          f"(exportable with the checkpoint: {', '.join(EXPORTABLE_ADAPTERS)})")
    return ckpt / "adapter"


def base_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The plain model's ``state_dict`` inside a peft-wrapped one (LoRA tensors dropped, names unwrapped);
    a plain ``state`` comes back unchanged."""
    if not any(k.startswith(PEFT_PREFIX) for k in state):
        return dict(state)
    return {k.removeprefix(PEFT_PREFIX).replace(".base_layer.", "."): v for k, v in state.items()
            if ".lora_" not in k}


def write_adapter(directory: Path, config: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
    """Write PEFT's two files into ``directory`` (created)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    (directory / PEFT_CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    save_file(dict(tensors), str(directory / PEFT_WEIGHTS_FILE), metadata={"format": "pt"})


__all__ = ["adapter_to_export", "base_state", "check_exportable", "convert_adapter", "hf_targets", "read_adapter",
           "write_adapter"]
