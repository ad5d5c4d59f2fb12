"""``plugformer quantize checkpoint=DIR quantizer=NAME [quantizer.KEY=VALUE ...] out=DIR``.

Loads a full-precision checkpoint, applies the quantizer and writes a quantized checkpoint:
``model.safetensors`` holding the quantizer's plain tensors (int8 data and scales, packed 4-bit data
and its quantization state, ...) with its metadata, ``quantization.json`` naming the quantizer and its
options, plus the config and tokenizer. ``generate checkpoint=OUT`` loads it directly.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from plugformer.commands import checkpoint_path, parse_keyvalues
from plugformer.errors import ConfigError, PlugformerError

KEYS = ("checkpoint", "quantizer", "out")

USAGE = """\
usage: plugformer quantize checkpoint=DIR quantizer=NAME [quantizer.KEY=VALUE ...] out=DIR

Quantizes the checkpoint's weights (plugformer plugins --family quantizer lists the quantizers) and
writes a checkpoint that generate loads directly. List options take comma-separated values:
quantizer.modules=*.mlp.*,*.attn.qkv

examples:
  plugformer quantize checkpoint=runs/base/checkpoints/last quantizer=int8 out=base-int8/
  plugformer quantize checkpoint=runs/base/checkpoints/last quantizer=nf4 quantizer.blocksize=128 out=base-nf4/
"""


def quantizer_node(name: str, options: dict[str, str], registries: Any) -> dict[str, Any]:
    """``{"name": name, **options}`` with each option parsed by its schema field's type."""
    import yaml

    entry = registries.quantizer.get(name)
    schema = entry.load_schema()
    fields = {f.name: f for f in dataclasses.fields(schema)} if schema is not None else {}
    node: dict[str, Any] = {"name": name}
    for key, raw in options.items():
        field = fields.get(key)
        if field is not None and field.default_factory is not dataclasses.MISSING and \
                isinstance(field.default_factory(), list):
            node[key] = [v.strip() for v in raw.strip("[]").split(",") if v.strip()]
            continue
        try:
            node[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            node[key] = raw
    return node


def quantize(checkpoint: Path, node: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write the quantized checkpoint; returns its ``quantization.json`` record."""
    from safetensors.torch import load_file, save_file

    from plugformer.build import build
    from plugformer.checkpoint import MODEL_FILE
    from plugformer.inference import (
        QUANTIZATION_FILE,
        load_model_for_inference,
        quantization_record,
        tensor_bytes,
        write_model_checkpoint,
    )
    from plugformer.interfaces import Quantizer
    from plugformer.plugins import load_plugins

    registries = load_plugins().registries
    entry = registries.quantizer.get(node["name"])
    ok, reason = entry.availability()
    if not ok:
        raise ConfigError(f"quantizer '{entry.name}' is unavailable here: {reason}")
    loaded = load_model_for_inference(checkpoint, registries, device="cpu")
    cfg = loaded.config
    if quantization_record(checkpoint) is not None:
        raise ConfigError(f"checkpoint '{checkpoint}' is already quantized; quantize the full-precision one")
    if (cfg.get("adapter") or {}).get("name", "none") != "none":
        raise ConfigError(f"checkpoint '{checkpoint}' was trained with adapter={cfg.adapter.name}: fold it in "
                          "first with `plugformer merge checkpoint=... out=MERGED`, then quantize MERGED")
    quantizer = build(registries, "quantizer", node)
    if not isinstance(quantizer, Quantizer):
        raise ConfigError(f"quantizer '{entry.name}' is not a plugformer.interfaces.Quantizer")
    before = tensor_bytes(load_file(str(checkpoint / MODEL_FILE)))  # tied tensors stored once
    model = quantizer.apply(loaded.model)
    tensors, metadata = quantizer.quantized_state(model)
    record = {"quantizer": {**node, **dataclasses.asdict(quantizer.config)} if dataclasses.is_dataclass(
        quantizer.config) else node, "source": str(checkpoint), "source_bytes": before,
        "bytes": tensor_bytes(tensors)}
    cfg.quantizer = record["quantizer"]
    write_model_checkpoint(out, checkpoint, cfg, lambda d: save_file(tensors, str(d / MODEL_FILE), metadata),
                           {QUANTIZATION_FILE: record})
    return record


def run(args: list[str]) -> int:
    """``plugformer quantize checkpoint=DIR quantizer=NAME out=DIR``."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    option_args = [a for a in args if a.startswith("quantizer.")]
    values = parse_keyvalues("quantize", [a for a in args if a not in option_args], KEYS,
                             ("checkpoint", "quantizer", "out"))
    from plugformer.plugins import load_plugins

    options: dict[str, str] = {}
    for arg in option_args:
        key, eq, value = arg[len("quantizer."):].partition("=")
        if not key or not eq or not value:
            raise PlugformerError(f"plugformer quantize: '{arg}' must read quantizer.KEY=VALUE")
        options[key] = value
    node = quantizer_node(values["quantizer"], options, load_plugins().registries)
    started = time.perf_counter()
    out = Path(values["out"]).expanduser()
    record = quantize(checkpoint_path(values["checkpoint"]), node, out)
    print(f"quantized with '{node['name']}': weights {record['source_bytes']:,} → {record['bytes']:,} bytes "
          f"({record['bytes'] / max(record['source_bytes'], 1):.1%}) in {out} ({time.perf_counter() - started:.1f}s)")
    return 0
