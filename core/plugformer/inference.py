"""One way to turn a checkpoint directory into a ready model: the loader behind ``generate`` (and
``eval``, ``merge``, ``quantize``, fine-tuning's starting point).

It understands every checkpoint plugformer writes:

- a training checkpoint (``checkpoints/step-N``): the model is rebuilt from its ``config.yaml``, the
  config's ``adapter``/``quantizer`` transforms are applied (so a LoRA or cast run's weights fit), and
  ``model.safetensors`` is loaded;
- a quantized checkpoint (``plugformer quantize``, marked by ``quantization.json``): the named quantizer
  rebuilds its quantized weights from plain safetensors tensors;
- plus, optionally, an adapter directory (``adapter=DIR``, e.g. ``<checkpoint>/adapter`` in PEFT's own
  format) applied unmerged on top of a plain base.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from plugformer.build import build, component_config
from plugformer.errors import ConfigError
from plugformer.interfaces import Adapter, Quantizer, Tokenizer, resolve_device
from plugformer.model.assemble import check_components
from plugformer.registry import Registries

QUANTIZATION_FILE = "quantization.json"  # marks a quantized checkpoint; names its quantizer and config
ADAPTER_FILE = "plugformer_adapter.json"  # next to PEFT's files: which adapter entry wrote them
PEFT_CONFIG = "adapter_config.json"


@dataclass
class InferenceModel:
    """What :func:`load_model_for_inference` returns: the model in eval mode, its tokenizer, the
    checkpoint's config and the device it sits on."""

    model: nn.Module
    tokenizer: Tokenizer
    config: DictConfig
    device: torch.device


def check_checkpoint_dir(path: str | Path) -> Path:
    """``path`` as a Path if it holds what generation reads, else a one-line :class:`ConfigError`."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"checkpoint '{path}' is not a plugformer checkpoint directory (expected config.yaml "
                          "and model.safetensors in it, e.g. <run dir>/checkpoints/last)")
    if not (path / "model.safetensors").is_file():
        hint = " (it holds sharded dcp/ weights: run `plugformer consolidate checkpoint=...` first)" \
            if (path / "dcp").is_dir() else ""
        raise ConfigError(f"checkpoint '{path}' has no model.safetensors{hint}")
    return path


def load_tokenizer(path: Path, cfg: DictConfig, registries: Registries) -> Tokenizer:
    """The tokenizer saved in ``path/tokenizer`` by the checkpoint's tokenizer entry."""
    entry = registries.tokenizer.get(cfg.tokenizer.name)
    return entry.load().load(component_config(entry, cfg.tokenizer), path / "tokenizer")


def quantization_record(path: Path) -> dict[str, Any] | None:
    """The ``quantization.json`` of a quantized checkpoint (quantizer node, sizes), or None."""
    file = Path(path) / QUANTIZATION_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def build_base_model(cfg: DictConfig, registries: Registries, vocab_size: int) -> nn.Module:
    """The plain model a checkpoint's config describes (random weights, no transforms)."""
    from plugformer.model import build_model

    return build_model(cfg, registries, vocab_size)


def load_weights(path: Path, cfg: DictConfig, registries: Registries, vocab_size: int) -> nn.Module:
    """The checkpoint's model with its weights: quantized checkpoints through their quantizer, others
    after the config's adapter/quantizer transforms (whose parameters the saved state holds)."""
    from plugformer.checkpoint import load_model
    from plugformer.model import apply_transforms
    from plugformer.model.transforms import component_transforms

    model = build_base_model(cfg, registries, vocab_size)
    record = quantization_record(path)
    if record is not None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        quantizer = build(registries, "quantizer", record["quantizer"])
        if not isinstance(quantizer, Quantizer):
            raise ConfigError(f"quantizer '{record['quantizer'].get('name')}' in {path / QUANTIZATION_FILE} is not a "
                              "Quantizer (it cannot rebuild saved weights)")
        file = str(path / "model.safetensors")
        with safe_open(file, framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return quantizer.load_quantized(model, load_file(file), metadata)
    model = apply_transforms(model, component_transforms(cfg, registries))
    model.load_state_dict(load_model(path))
    return model


def adapter_entry_name(directory: Path, registries: Registries) -> str:
    """Which ``adapter`` entry loads ``directory``: the one named in its ``plugformer_adapter.json``, else
    the one declaring the PEFT type of its ``adapter_config.json`` (capability ``peft_types``)."""
    marker = directory / ADAPTER_FILE
    if marker.is_file():
        return str(json.loads(marker.read_text())["adapter"])
    if (directory / PEFT_CONFIG).is_file():
        peft_type = json.loads((directory / PEFT_CONFIG).read_text()).get("peft_type")
        for entry in registries.adapter:
            if peft_type in entry.capabilities.get("peft_types", ()):
                return entry.name
        raise ConfigError(f"adapter '{directory}' has PEFT type {peft_type!r}, which no installed adapter loads "
                          f"(adapters: {', '.join(registries.adapter.names())})")
    raise ConfigError(f"adapter '{directory}' is not an adapter directory (expected {PEFT_CONFIG} and "
                      f"adapter_model.safetensors, e.g. <checkpoint>/adapter)")


def attach_adapter(model: nn.Module, directory: str | Path, registries: Registries) -> nn.Module:
    """``model`` with the saved adapter in ``directory`` applied, unmerged."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"adapter '{directory}' does not exist (expected a directory such as <checkpoint>/adapter)")
    name = adapter_entry_name(directory, registries)
    entry = registries.adapter.get(name)
    ok, reason = entry.availability()
    if not ok:
        raise ConfigError(f"adapter '{name}' needed by '{directory}' is unavailable here: {reason}")
    cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"adapter '{name}' cannot load saved adapters (it is not a plugformer.interfaces.Adapter)")
    return cls.load_adapter(model, directory)


def load_model_for_inference(checkpoint: str | Path, registries: Registries, *, adapter: str | Path | None = None,
                             device: str = "auto") -> InferenceModel:
    """Load ``checkpoint`` (a ``checkpoints/step-N``/``last`` directory, a merged or a quantized checkpoint)
    for inference, optionally with the adapter directory ``adapter`` applied unmerged on top.

    The plugins the checkpoint was written with must be installed. Returns the model in eval mode on
    ``device`` (``auto``: cuda when visible), with its tokenizer and config.
    """
    path = check_checkpoint_dir(checkpoint)
    cfg = OmegaConf.load(path / "config.yaml")
    check_components(cfg, registries, path / "plugins.json")
    tokenizer = load_tokenizer(path, cfg, registries)
    dev = torch.device(resolve_device(device))
    record = quantization_record(path)
    if record is not None:
        devices = registries.quantizer.get(record["quantizer"]["name"]).capabilities.get("devices")
        if devices is not None and dev.type not in devices:
            raise ConfigError(f"checkpoint '{path}' is quantized with '{record['quantizer']['name']}', which runs on "
                              f"{', '.join(devices)}, not {dev.type}")
    model = load_weights(path, cfg, registries, tokenizer.vocab_size)
    if adapter is not None:
        trained_with = (cfg.get("adapter") or {}).get("name", "none")
        if record is not None or trained_with != "none":
            what = "a quantized checkpoint" if record is not None else f"a checkpoint trained with adapter={trained_with}"
            raise ConfigError(f"adapter={adapter} needs a plain base checkpoint, but '{path}' is {what}")
        model = attach_adapter(model, adapter, registries)
    return InferenceModel(model.to(dev).eval(), tokenizer, cfg, dev)


def write_model_checkpoint(out: str | Path, source: Path, cfg: DictConfig, write_weights: Callable[[Path], None],
                           records: dict[str, Any] | None = None) -> Path:
    """Write a model-only checkpoint (what :func:`load_model_for_inference` reads) to ``out`` atomically:
    ``write_weights(directory)`` writes ``model.safetensors``, ``cfg`` becomes ``config.yaml``, the
    tokenizer and ``plugins.json`` copied from ``source``, and each of ``records`` as ``<name>`` JSON.
    Everything is written to a temporary sibling directory renamed into place at the end."""
    import os
    import shutil

    from plugformer.checkpoint import write_json

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"out={out} exists and is not empty; choose a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write_weights(tmp)
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        shutil.copytree(source / "tokenizer", tmp / "tokenizer")
        if (source / "plugins.json").is_file():
            shutil.copy2(source / "plugins.json", tmp / "plugins.json")
        for name, data in (records or {}).items():
            write_json(tmp / name, data)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def tensor_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes the tensors occupy (what a safetensors file of them holds, headers aside)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


__all__ = ["ADAPTER_FILE", "QUANTIZATION_FILE", "InferenceModel", "attach_adapter", "build_base_model",
           "check_checkpoint_dir", "load_model_for_inference", "load_tokenizer", "load_weights",
           "quantization_record", "tensor_bytes", "write_model_checkpoint"]
