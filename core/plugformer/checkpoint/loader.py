"""One way to turn a checkpoint directory into a ready model: the loader behind ``generate`` (and
``eval``, ``merge``, ``quantize``, ``prune``, fine-tuning's starting point).

It understands every checkpoint plugformer writes:

- a training checkpoint (``checkpoints/step-N``): the model is rebuilt from its ``config.yaml``, the
  config's ``adapter``/``quantizer`` transforms are applied (so a LoRA or cast run's weights fit), and
  ``model.safetensors`` is loaded;
- a quantized checkpoint (``plugformer quantize``, marked by ``quantization.json``): the named quantizer
  rebuilds its quantized weights from plain safetensors tensors;
- plus, optionally, an adapter directory (``adapter=DIR``, e.g. ``<checkpoint>/adapter`` in PEFT's own
  format) applied unmerged on top of a plain base.

A checkpoint is untrusted input: its config is read with interpolation off (``${oc.env:...}`` is refused,
never resolved), nothing in it is unpickled or imported, and every broken file (truncated weights, garbage
config, weights that no longer fit the config, a missing or foreign tokenizer, pickle-only adapter
weights) is a one-line :class:`~plugformer.errors.ConfigError` naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf

from plugformer.checkpoint.layout import (
    ADAPTER_MARKER_FILE,
    CONFIG_FILE,
    DCP_DIR,
    MODEL_FILE,
    PEFT_CONFIG_FILE,
    PEFT_WEIGHTS_FILE,
    QUANTIZATION_FILE,
    TOKENIZER_DIR,
    resolve_checkpoint,
)
from plugformer.checkpoint.probes import plugins_record, quantization_record, trained_adapter
from plugformer.errors import ConfigError, PlugformerError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from plugformer.interfaces import Tokenizer
    from plugformer.registry import Registries


@dataclass
class InferenceModel:
    """What :func:`load_model_for_inference` returns: the model in eval mode, its tokenizer, the
    checkpoint's config and the device it sits on."""

    model: nn.Module
    tokenizer: Tokenizer
    config: DictConfig
    device: torch.device


def _one_line(exc: BaseException, limit: int = 200) -> str:
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def _interpolation(node: Any, key: str = "") -> str | None:
    """The dotted key of the first string holding an interpolation (``${...}``), or None."""
    if isinstance(node, dict):
        for k, v in node.items():
            found = _interpolation(v, f"{key}.{k}" if key else str(k))
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found = _interpolation(v, f"{key}[{i}]")
            if found is not None:
                return found
    elif isinstance(node, str) and "${" in node:
        return key
    return None


def load_config(path: str | Path) -> DictConfig:
    """The ``config.yaml`` of an artifact (``path``: the checkpoint directory or the file itself).

    Read with interpolation off: checkpoints store resolved configs, so a value holding ``${...}`` (e.g.
    ``${oc.env:SECRET}`` planted in a downloaded checkpoint) is refused in one line naming its key; it is
    never resolved, printed or copied. Empty, non-YAML or non-mapping files are one-line errors too.
    """
    from omegaconf._utils import get_yaml_loader  # OmegaConf's own (safe) YAML loader, as OmegaConf.load uses

    path = Path(path)
    file = path / CONFIG_FILE if path.is_dir() else path
    if not file.is_file():
        raise ConfigError(f"{file} does not exist")
    try:
        data = yaml.load(file.read_text(encoding="utf-8"), Loader=get_yaml_loader())  # noqa: S506 (safe loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{file} is not a readable YAML config ({_one_line(exc, 160)})") from None
    if data is None:
        raise ConfigError(f"{file} is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{file} holds a {type(data).__name__}, not a mapping of config keys")
    key = _interpolation(data)
    if key is not None:
        raise ConfigError(f"{file}: '{key}' holds an interpolation ('${{...}}'); checkpoint configs are stored "
                          "resolved and plugformer never resolves interpolations from an artifact")
    try:
        return OmegaConf.create(data)
    except Exception as exc:  # OmegaConf refuses values it cannot hold (dates, non-string keys, ...)
        raise ConfigError(f"{file} is not a valid config ({_one_line(exc, 160)})") from None


def _require_nodes(cfg: DictConfig, path: Path) -> None:
    """A checkpoint config names its tokenizer and describes its model; else one line."""
    for key in ("tokenizer", "model"):
        node = cfg.get(key)
        if not isinstance(node, DictConfig) or (key == "tokenizer" and not isinstance(node.get("name"), str)):
            raise ConfigError(f"{path / CONFIG_FILE} has no valid '{key}' node; it is not the config of a "
                              "plugformer checkpoint")


def check_checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint ``path`` names (a checkpoint, or a run directory's ``checkpoints/last``) if it holds
    what generation reads, else a one-line :class:`ConfigError`."""
    path = resolve_checkpoint(path)
    if not (path / CONFIG_FILE).is_file():
        raise ConfigError(f"checkpoint '{path}' is not a plugformer checkpoint directory (expected {CONFIG_FILE} "
                          f"and {MODEL_FILE} in it, e.g. <run dir>/checkpoints/last)")
    if not (path / MODEL_FILE).is_file():
        hint = " (it holds sharded dcp/ weights: run `plugformer consolidate checkpoint=...` first)" \
            if (path / DCP_DIR).is_dir() else ""
        raise ConfigError(f"checkpoint '{path}' has no {MODEL_FILE}{hint}")
    return path


def load_tokenizer(path: str | Path, cfg: DictConfig | None, registries: Registries) -> Tokenizer:
    """The tokenizer saved in ``path/tokenizer`` by the tokenizer entry the checkpoint's config names
    (``cfg``: that config, read from ``path`` when None)."""
    from plugformer.build import component_config

    path = Path(path)
    cfg = load_config(path) if cfg is None else cfg
    directory = path / TOKENIZER_DIR
    if not directory.is_dir():
        raise ConfigError(f"checkpoint '{path}' has no {TOKENIZER_DIR}/ directory (the tokenizer it was trained with)")
    name = cfg.tokenizer.name
    entry = registries.tokenizer.get(name)
    try:
        return entry.load().load(component_config(entry, cfg.tokenizer), directory)
    except PlugformerError:
        raise
    except Exception as exc:  # a missing file, another tokenizer's files, a malformed file
        raise ConfigError(f"{directory} cannot be loaded by tokenizer '{name}' (the one {CONFIG_FILE} names): "
                          f"{type(exc).__name__}: {_one_line(exc)}") from None


def build_base_model(cfg: DictConfig, registries: Registries, vocab_size: int) -> nn.Module:
    """The plain model a checkpoint's config describes (random weights, no transforms)."""
    from plugformer.model import build_model

    return build_model(cfg, registries, vocab_size)


def _mismatch(model: nn.Module, state: dict[str, Any]) -> str:
    """What differs between ``model``'s state dict and ``state``: shapes, then missing/extra keys."""
    expected = model.state_dict()
    for key, wanted in expected.items():  # in the model's order: the first layer that differs
        if key in state and tuple(wanted.shape) != tuple(state[key].shape):
            return (f"'{key}' is {tuple(state[key].shape)} in the file but {tuple(wanted.shape)} in the model "
                    "the config describes")
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        return f"it lacks {len(missing)} tensor(s) of the model, e.g. '{missing[0]}'"
    if extra:
        return f"it holds {len(extra)} tensor(s) the model lacks, e.g. '{extra[0]}'"
    return ""


def load_state_checked(model: nn.Module, state: dict[str, Any], file: Path, **kwargs: Any) -> None:
    """``model.load_state_dict(state)``; weights that do not fit the model are one line naming ``file``."""
    try:
        model.load_state_dict(state, **kwargs)
    except RuntimeError as exc:
        detail = _mismatch(model, state) or _one_line(exc)
        raise ConfigError(f"{file} does not match the model its {CONFIG_FILE} describes: {detail}") from None


def load_weights(path: Path, cfg: DictConfig, registries: Registries, vocab_size: int) -> nn.Module:
    """The checkpoint's model with its weights: quantized checkpoints through their quantizer, others
    after the config's adapter/quantizer transforms (whose parameters the saved state holds)."""
    from plugformer.build import build
    from plugformer.checkpoint.state import load_model, read_tensors
    from plugformer.interfaces import Quantizer
    from plugformer.model import apply_transforms
    from plugformer.model.transforms import component_transforms

    model = build_base_model(cfg, registries, vocab_size)
    file = path / MODEL_FILE
    record = quantization_record(path)
    if record is not None:
        quantizer = build(registries, "quantizer", record["quantizer"])
        if not isinstance(quantizer, Quantizer):
            raise ConfigError(f"quantizer '{record['quantizer'].get('name')}' in {path / QUANTIZATION_FILE} is not a "
                              "Quantizer (it cannot rebuild saved weights)")
        tensors, metadata = read_tensors(file)
        try:
            return quantizer.load_quantized(model, tensors, metadata)
        except PlugformerError:
            raise
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ConfigError(f"{file} cannot be rebuilt by quantizer '{record['quantizer']['name']}' into the model "
                              f"its {CONFIG_FILE} describes: {_one_line(exc)}") from None
    model = apply_transforms(model, component_transforms(cfg, registries))
    load_state_checked(model, load_model(path), file)
    return model


def adapter_entry_name(directory: Path, registries: Registries) -> str:
    """Which ``adapter`` entry loads ``directory``: the one named in its ``plugformer_adapter.json``, else
    the one declaring the PEFT type of its ``adapter_config.json`` (capability ``peft_types``)."""
    from plugformer.checkpoint.state import read_json

    directory = Path(directory)
    marker = directory / ADAPTER_MARKER_FILE
    if marker.is_file():
        data = read_json(marker)
        if not isinstance(data, dict) or not isinstance(data.get("adapter"), str):
            raise ConfigError(f"{marker} does not name the adapter that wrote it")
        return data["adapter"]
    if (directory / PEFT_CONFIG_FILE).is_file():
        peft = read_json(directory / PEFT_CONFIG_FILE)
        peft_type = peft.get("peft_type") if isinstance(peft, dict) else None
        for entry in registries.adapter:
            if peft_type in entry.capabilities.get("peft_types", ()):
                return entry.name
        raise ConfigError(f"adapter '{directory}' has PEFT type {peft_type!r}, which no installed adapter loads "
                          f"(adapters: {', '.join(registries.adapter.names())})")
    raise ConfigError(f"adapter '{directory}' is not an adapter directory (expected {PEFT_CONFIG_FILE} and "
                      f"{PEFT_WEIGHTS_FILE}, e.g. <checkpoint>/adapter)")


def _check_adapter_weights(directory: Path) -> None:
    """Adapter weights are read from safetensors only: pickle ``.bin`` files can run code when loaded."""
    if (directory / PEFT_WEIGHTS_FILE).is_file():
        return
    pickles = sorted(p.name for p in directory.glob("*.bin"))
    if pickles:
        raise ConfigError(f"adapter '{directory}' holds only pickle weights ({', '.join(pickles)}), which plugformer "
                          f"never loads; it needs {PEFT_WEIGHTS_FILE}")
    raise ConfigError(f"adapter '{directory}' has no {PEFT_WEIGHTS_FILE}")


def attach_adapter(model: nn.Module, directory: str | Path, registries: Registries) -> nn.Module:
    """``model`` with the saved adapter in ``directory`` applied, unmerged."""
    from plugformer.interfaces import Adapter

    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ConfigError(f"adapter '{directory}' does not exist (expected a directory such as <checkpoint>/adapter)")
    name = adapter_entry_name(directory, registries)
    _check_adapter_weights(directory)
    entry = registries.adapter.get(name)
    ok, reason = entry.availability()
    if not ok:
        raise ConfigError(f"adapter '{name}' needed by '{directory}' is unavailable here: {reason}")
    cls = entry.load()
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ConfigError(f"adapter '{name}' cannot load saved adapters (it is not a plugformer.interfaces.Adapter)")
    try:
        return cls.load_adapter(model, directory)
    except PlugformerError:
        raise
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        raise ConfigError(f"adapter '{directory}' does not fit this model: {_one_line(exc)}") from None


def load_model_for_inference(checkpoint: str | Path, registries: Registries, *, adapter: str | Path | None = None,
                             device: str = "auto") -> InferenceModel:
    """Load ``checkpoint`` (a ``checkpoints/step-N``/``last`` directory, a run directory, a merged or a
    quantized checkpoint) for inference, optionally with the adapter directory ``adapter`` applied
    unmerged on top.

    The plugins the checkpoint was written with must be installed. Returns the model in eval mode on
    ``device`` (``auto``: cuda when visible), with its tokenizer and config.
    """
    import torch

    from plugformer.interfaces import resolve_device
    from plugformer.model import model_components

    path = check_checkpoint_dir(checkpoint)
    cfg = load_config(path)
    _require_nodes(cfg, path)
    registries.require(model_components(cfg), plugins_record(path))  # a missing plugin is named with its package
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
        trained_with = trained_adapter(cfg)
        if record is not None or trained_with is not None:
            what = ("a quantized checkpoint" if record is not None
                    else f"a checkpoint trained with adapter={trained_with}")
            raise ConfigError(f"adapter={adapter} needs a plain base checkpoint, but '{path}' is {what}")
        model = attach_adapter(model, adapter, registries)
    return InferenceModel(model.to(dev).eval(), tokenizer, cfg, dev)


__all__ = ["InferenceModel", "adapter_entry_name", "attach_adapter", "build_base_model", "check_checkpoint_dir",
           "load_config", "load_model_for_inference", "load_state_checked", "load_tokenizer", "load_weights"]
