"""``plugformer merge checkpoint=DIR [adapter=DIR] out=DIR``: fold a LoRA adapter into the base weights.

Two sources: a checkpoint trained with an adapter (``adapter=lora`` in its config; its step directory
holds base and adapter), or a plain base checkpoint plus an adapter directory in PEFT's format. The
result is an ordinary full checkpoint (``adapter: none`` in its config) that ``generate`` loads like any
other, with no peft needed.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from plugformer.commands import checkpoint_path, parse_keyvalues
from plugformer.errors import PlugformerError

KEYS = ("checkpoint", "adapter", "out")

USAGE = """\
usage: plugformer merge checkpoint=DIR [adapter=DIR] out=DIR

Folds the adapter into the base weights and writes a full checkpoint to OUT. DIR is a checkpoint
trained with adapter=lora|qlora (its adapter is used), or a plain checkpoint plus adapter=DIR (a PEFT
adapter directory such as <checkpoint>/adapter).

examples:
  plugformer merge checkpoint=runs/sft/checkpoints/last out=merged/
  plugformer merge checkpoint=runs/base/checkpoints/last adapter=runs/sft/checkpoints/last/adapter out=merged/
"""


def merge(checkpoint: Path, out: Path, adapter: Path | None = None) -> tuple[Path, str, int]:
    """Write the merged checkpoint; returns (its directory, the adapter entry that merged, parameters)."""
    from plugformer.checkpoint import save_model
    from plugformer.inference import (
        adapter_entry_name,
        load_model_for_inference,
        write_model_checkpoint,
    )
    from plugformer.plugins import load_plugins

    registries = load_plugins().registries
    loaded = load_model_for_inference(checkpoint, registries, adapter=adapter, device="cpu")
    cfg = loaded.config
    name = adapter_entry_name(adapter, registries) if adapter is not None else \
        (cfg.get("adapter") or {}).get("name", "none")
    if name == "none":
        raise PlugformerError(f"checkpoint '{checkpoint}' was trained without an adapter; pass adapter=DIR "
                              "(e.g. <finetuned checkpoint>/adapter) to merge one into it")
    merged = registries.adapter.load(name).merge(loaded.model)
    cfg.adapter = {"name": "none"}
    write_model_checkpoint(out, Path(checkpoint), cfg, lambda d: save_model(d, merged.state_dict()),
                           {"merge.json": {"adapter": name, "checkpoint": str(checkpoint),
                                           "adapter_dir": str(adapter) if adapter else None}})
    return out, name, sum(p.numel() for p in merged.parameters())


def run(args: list[str]) -> int:
    """``plugformer merge checkpoint=DIR [adapter=DIR] out=DIR``."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse_keyvalues("merge", args, KEYS, ("checkpoint", "out"))
    started = time.perf_counter()
    adapter = Path(values["adapter"]).expanduser() if "adapter" in values else None
    out, name, n_params = merge(checkpoint_path(values["checkpoint"]), Path(values["out"]).expanduser(), adapter)
    print(f"merged adapter '{name}' into {n_params:,} parameters: {out} ({time.perf_counter() - started:.1f}s)")
    return 0
