"""Quantizing a full-precision checkpoint with a registered quantizer.

The output holds ``model.safetensors`` with the quantizer's plain tensors (int8 data and scales, packed
4-bit data and its quantization state, ...) and its metadata, ``quantization.json`` naming the quantizer
and its options, plus the config and tokenizer. ``generate checkpoint=OUT`` loads it directly.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugformer.build import build
from plugformer.checkpoint import (
    QUANTIZATION_FILE,
    check_checkpoint_dir,
    is_quantized,
    load_config,
    load_model_for_inference,
    read_tensors,
    tensor_bytes,
    trained_adapter,
    write_model_checkpoint,
)
from plugformer.checkpoint.layout import MODEL_FILE
from plugformer.checkpoint.writer import check_new_dir
from plugformer.errors import ConfigError
from plugformer.interfaces import Quantizer
from plugformer.ops._registries import registries_or_loaded
from plugformer.registry import Registries


@dataclass(frozen=True)
class QuantizeReport:
    """What :func:`quantize` wrote: the directory, the quantizer node (name and every option), and the
    weight bytes before and after."""

    out: Path
    source: Path
    quantizer: dict[str, Any]
    source_bytes: int
    bytes: int

    def record(self) -> dict[str, Any]:
        """The quantized checkpoint's ``quantization.json``."""
        return {"quantizer": self.quantizer, "source": str(self.source), "source_bytes": self.source_bytes,
                "bytes": self.bytes}


def quantize(checkpoint: str | Path, quantizer: str | Mapping[str, Any], out: str | Path, *,
             registries: Registries | None = None) -> QuantizeReport:
    """Quantize ``checkpoint``'s weights with ``quantizer`` (a registry name, or a node ``{"name": ...,
    option: value}``) and write the quantized checkpoint to ``out`` (absent or empty)."""
    registries = registries_or_loaded(registries)
    node = {"name": quantizer} if isinstance(quantizer, str) else dict(quantizer)
    entry = registries.quantizer.get(node["name"])
    ok, reason = entry.availability()
    if not ok:
        raise ConfigError(f"quantizer '{entry.name}' is unavailable here: {reason}")
    source = check_checkpoint_dir(checkpoint)
    out = check_new_dir(out)
    if is_quantized(source):
        raise ConfigError(f"checkpoint '{source}' is already quantized; quantize the full-precision one")
    adapter = trained_adapter(load_config(source))
    if adapter is not None:
        raise ConfigError(f"checkpoint '{source}' was trained with adapter={adapter}: fold it in "
                          "first with `plugformer merge checkpoint=... out=MERGED`, then quantize MERGED")
    quantizer_ = build(registries, "quantizer", node)
    if not isinstance(quantizer_, Quantizer):
        raise ConfigError(f"quantizer '{entry.name}' is not a plugformer.interfaces.Quantizer")
    loaded = load_model_for_inference(source, registries, device="cpu")
    before = tensor_bytes(read_tensors(source / MODEL_FILE)[0])  # tied tensors stored once
    model = quantizer_.apply(loaded.model)
    tensors, metadata = quantizer_.quantized_state(model)
    options = dataclasses.asdict(quantizer_.config) if dataclasses.is_dataclass(quantizer_.config) else {}
    report = QuantizeReport(out=out, source=source, quantizer={**node, **options}, source_bytes=before,
                            bytes=tensor_bytes(tensors))
    cfg = loaded.config
    cfg.quantizer = report.quantizer
    write_model_checkpoint(out, cfg, tensors, metadata=metadata, source=source,
                           records={QUANTIZATION_FILE: report.record()})
    return report


__all__ = ["QuantizeReport", "quantize"]
