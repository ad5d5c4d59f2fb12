"""Folding an adapter into the base weights.

Two sources: a checkpoint trained with an adapter (``adapter=lora`` in its config; its step directory
holds base and adapter), or a plain base checkpoint plus an adapter directory in PEFT's format. The
result is an ordinary full checkpoint (``adapter: none`` in its config) that ``generate`` loads like any
other, with no peft needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugformer.checkpoint import (
    MERGE_FILE,
    adapter_entry_name,
    check_checkpoint_dir,
    load_model_for_inference,
    trained_adapter,
    write_model_checkpoint,
)
from plugformer.checkpoint.writer import check_new_dir
from plugformer.errors import ConfigError
from plugformer.ops._registries import registries_or_loaded
from plugformer.registry import Registries


@dataclass(frozen=True)
class MergeReport:
    """What :func:`merge` wrote: the directory, the adapter entry that merged, the merged model's size."""

    out: Path
    adapter: str
    params: int


def merge(checkpoint: str | Path, out: str | Path, adapter: str | Path | None = None, *,
          registries: Registries | None = None) -> MergeReport:
    """Fold the adapter of ``checkpoint`` (trained with one), or the adapter directory ``adapter`` applied
    to the plain ``checkpoint``, into the base weights; write the full checkpoint to ``out``."""
    registries = registries_or_loaded(registries)
    source = check_checkpoint_dir(checkpoint)
    out = check_new_dir(out)
    adapter = Path(adapter).expanduser() if adapter is not None else None
    if adapter is None and trained_adapter(source) is None:
        raise ConfigError(f"checkpoint '{checkpoint}' was trained without an adapter; pass adapter=DIR "
                          "(e.g. <finetuned checkpoint>/adapter) to merge one into it")
    loaded = load_model_for_inference(source, registries, adapter=adapter, device="cpu")
    name = adapter_entry_name(adapter, registries) if adapter is not None else trained_adapter(loaded.config)
    merged = registries.adapter.load(name).merge(loaded.model)
    cfg = loaded.config
    cfg.adapter = {"name": "none"}
    write_model_checkpoint(out, cfg, merged.state_dict(), source=source,
                           records={MERGE_FILE: {"adapter": name, "checkpoint": str(checkpoint),
                                                 "adapter_dir": str(adapter) if adapter else None}})
    return MergeReport(out=out, adapter=name, params=sum(p.numel() for p in merged.parameters()))


__all__ = ["MergeReport", "merge"]
