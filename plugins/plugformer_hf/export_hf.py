"""A plugformer checkpoint → a Hugging Face model directory that ``AutoModelForCausalLM.from_pretrained``
loads (GPT-2 for learned positions + layernorm + gelu, Llama for rope + rmsnorm + swiglu).

Writes ``config.json`` and ``generation_config.json`` (through transformers' own config classes, so the
format is the installed version's), ``model.safetensors`` (float32, HF tensor names), and, when the
checkpoint's tokenizer is a ``tokenizer.json`` (bpe, wordpiece, unigram, hf), that file with a
``tokenizer_config.json`` naming its special tokens. A model with a component HF has no equivalent for
is refused before anything is written, naming the component. The directory is written atomically.

A LoRA adapter (the checkpoint's own, when it was trained with ``adapter=lora``, or ``adapter=DIR`` on a
plain base) exports next to the base model, renamed for it, in ``out/adapter/`` (PEFT's format; see
:mod:`plugformer_hf.adapter_export`): the base model is exported unmerged.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugformer import ConfigError, UnavailableError
from plugformer_hf.adapter_export import (
    adapter_to_export,
    base_state,
    convert_adapter,
    read_adapter,
    write_adapter,
)
from plugformer_hf.hf_mapping import component_rules, hf_config_from_plugformer, state_to_hf
from plugformer_hf.import_hf import HF_WEIGHTS_FILE

TOKENIZER_JSON = "tokenizer.json"
CAST_QUANTIZERS = ("none", "bf16", "fp16")  # plain casts: the weights export as float32


@dataclass
class ExportResult:
    """What :func:`export_hf` wrote."""

    out: Path
    family: str
    n_tensors: int
    tokenizer: bool
    seconds: float
    adapter_tensors: int = 0  # tensors in out/adapter/ (0: no adapter exported)


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UnavailableError("export-hf needs transformers (pip install 'plugformer[hf]')") from None
    return transformers


def _token(tokenizer: Any, token_id: int | None) -> str | None:
    return tokenizer.hf.id_to_token(token_id) if token_id is not None else None


def _write_tokenizer(tokenizer: Any, ckpt: Path, out: Path, max_len: int) -> bool:
    """Copy ``tokenizer.json`` (+ a ``tokenizer_config.json``) when the tokenizer has one; False otherwise."""
    from plugformer.checkpoint import write_json

    source = ckpt / "tokenizer" / TOKENIZER_JSON
    if not source.is_file() or not hasattr(tokenizer, "hf"):
        return False
    shutil.copy2(source, out / TOKENIZER_JSON)
    roles = {"eos_token": _token(tokenizer, tokenizer.eos_id), "bos_token": _token(tokenizer, tokenizer.eos_id),
             "pad_token": _token(tokenizer, tokenizer.pad_id), "mask_token": _token(tokenizer, tokenizer.mask_id)}
    write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len,
        "add_bos_token": False, "add_eos_token": False, **{k: v for k, v in roles.items() if v is not None}})
    return True


def _check_plain(ckpt: Path, cfg: Any, adapter_exported: bool = False) -> None:
    """Only full-precision (or cast) weights export, with an adapter only through ``adapter_export``; say
    what to run first otherwise."""
    from plugformer.checkpoint import quantization_record

    record = quantization_record(ckpt)
    if record is not None:
        raise ConfigError(f"checkpoint '{ckpt}' is quantized with '{record['quantizer'].get('name')}', which has no "
                          "Hugging Face export here; export the checkpoint it was quantized from")
    adapter = (cfg.get("adapter") or {}).get("name", "none")
    if adapter != "none" and not adapter_exported:
        raise ConfigError(f"checkpoint '{ckpt}' holds adapter '{adapter}' weights; fold them in first with "
                          "`plugformer merge checkpoint=... out=...`, then export the merged checkpoint")
    quantizer = (cfg.get("quantizer") or {}).get("name", "none")
    if quantizer not in CAST_QUANTIZERS:
        raise ConfigError(f"quantizer '{quantizer}' (in the checkpoint's config) has no Hugging Face equivalent; "
                          f"exportable: {', '.join(CAST_QUANTIZERS)}")


def export_hf(checkpoint: str | Path, out: str | Path, host: Any = None,
              adapter: str | Path | None = None) -> ExportResult:
    """Write the HF model directory ``out`` (must not exist or be empty) for the plugformer ``checkpoint``,
    with its LoRA adapter (or ``adapter``, on a plain base) converted into ``out/adapter``."""
    from safetensors.torch import save_file

    from plugformer import load_plugins
    from plugformer.checkpoint import (
        ADAPTER_DIR, check_checkpoint_dir, check_new_dir, load_config, load_model, load_tokenizer, new_directory,
    )

    started = time.perf_counter()
    ckpt, out = check_checkpoint_dir(Path(checkpoint).expanduser()), Path(out).expanduser()
    check_new_dir(out)  # refused before anything is read
    cfg = load_config(ckpt)
    adapter_dir = adapter_to_export(ckpt, cfg, adapter)
    _check_plain(ckpt, cfg, adapter_exported=adapter_dir is not None)
    registries = (host or load_plugins()).registries
    tokenizer = load_tokenizer(ckpt, cfg, registries)
    causal = tuple(e.name for e in registries.objective if e.capabilities.get("causal")) or ("clm",)
    hf = hf_config_from_plugformer(cfg, tokenizer.vocab_size, tokenizer.eos_id, tokenizer.pad_id, causal, registries)
    transformers = _transformers()
    config_class = transformers.GPT2Config if hf["model_type"] == "gpt2" else transformers.LlamaConfig
    kwargs = {k: v for k, v in hf.items() if k != "model_type"}
    components = {family: str(cfg[family].name) for family in ("position", "norm", "mlp")}
    tensors = state_to_hf(hf, base_state(load_model(ckpt)), components, registries)
    mlp_rules = component_rules(registries, components, hf["model_type"])["mlp"]
    hf_adapter = convert_adapter(hf, *read_adapter(adapter_dir), adapter_dir, mlp_rules) \
        if adapter_dir is not None else None
    with new_directory(out) as tmp:
        config_class(**kwargs).save_pretrained(tmp)
        transformers.GenerationConfig(bos_token_id=hf["bos_token_id"], eos_token_id=hf["eos_token_id"],
                                      pad_token_id=hf["pad_token_id"]).save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / HF_WEIGHTS_FILE),
                  metadata={"format": "pt"})
        if hf_adapter is not None:
            write_adapter(tmp / ADAPTER_DIR, *hf_adapter)
        has_tokenizer = _write_tokenizer(tokenizer, ckpt, tmp, int(cfg.model.max_seq_len or cfg.data.seq_len))
    return ExportResult(out, hf["model_type"], len(tensors), has_tokenizer, time.perf_counter() - started,
                        len(hf_adapter[1]) if hf_adapter is not None else 0)
