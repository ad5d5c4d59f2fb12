"""``plugformer quantize checkpoint=DIR quantizer=NAME [quantizer.KEY=VALUE ...] out=DIR``: a quantized
checkpoint that ``generate`` loads directly; the work is :func:`plugformer.ops.quantize`."""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from plugformer.commands import parse_keyvalues
from plugformer.errors import PlugformerError

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
    """``{"name": name, **options}`` with each command-line option parsed by its schema field's type."""
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


def run(args: list[str]) -> int:
    """``plugformer quantize checkpoint=DIR quantizer=NAME out=DIR``."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    option_args = [a for a in args if a.startswith("quantizer.")]
    values = parse_keyvalues("quantize", [a for a in args if a not in option_args], KEYS,
                             ("checkpoint", "quantizer", "out"))
    from plugformer.ops import quantize
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
    report = quantize(values["checkpoint"], node, out)
    print(f"quantized with '{node['name']}': weights {report.source_bytes:,} → {report.bytes:,} bytes "
          f"({report.bytes / max(report.source_bytes, 1):.1%}) in {out} ({time.perf_counter() - started:.1f}s)")
    return 0
