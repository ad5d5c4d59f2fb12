"""One full ``model.safetensors`` from a sharded (``dcp/``) checkpoint, in a single process without any
process group.

The ``fsdp`` strategy writes the consolidated model next to its shards at every save; this rebuilds it
when that copy is missing (in place), or writes a model-only checkpoint elsewhere. The model is built
from the checkpoint's own ``config.yaml`` and tokenizer, its weights gathered from the shards of however
many ranks wrote them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugformer.build import build
from plugformer.checkpoint import (
    CONFIG_FILE,
    DCP_DIR,
    MODEL_FILE,
    load_config,
    load_tokenizer,
    replace_model_file,
    resolve_checkpoint,
    write_model_checkpoint,
)
from plugformer.checkpoint.writer import check_new_dir
from plugformer.errors import ConfigError
from plugformer.ops._registries import registries_or_loaded
from plugformer.registry import Registries

#: the one-process strategy reads every checkpoint format the strategies write (found by name in the
#: registry, like any component): here, all ranks' shards, with no process group
READER_STRATEGY = "single"


@dataclass(frozen=True)
class ConsolidateReport:
    """What :func:`consolidate` wrote: the checkpoint directory, its model file and the parameter count."""

    out: Path
    model_file: Path
    source: Path
    params: int


def consolidate(checkpoint: str | Path, out: str | Path | None = None, *,
                registries: Registries | None = None) -> ConsolidateReport:
    """Write the full model of the sharded ``checkpoint`` (or a run directory's ``checkpoints/last``) as
    ``model.safetensors``: into ``checkpoint`` itself (``out`` None), or as a new model-only checkpoint
    ``out`` (absent or empty) with the config, tokenizer and plugin manifest."""
    import torch

    from plugformer.model import build_model

    source = resolve_checkpoint(checkpoint)
    if not (source / CONFIG_FILE).is_file():
        raise ConfigError(f"'{source}' is not a plugformer checkpoint directory (no {CONFIG_FILE})")
    if not (source / DCP_DIR).is_dir():
        has_model = (source / MODEL_FILE).is_file()
        raise ConfigError(f"'{source}' has no sharded {DCP_DIR}/ checkpoint to consolidate"
                          + (f" (its {MODEL_FILE} is already the full model)" if has_model else ""))
    in_place = out is None or Path(out).expanduser().resolve() == source.resolve()
    if not in_place:
        out = check_new_dir(out)
    registries = registries_or_loaded(registries)
    cfg = load_config(source)
    tokenizer = load_tokenizer(source, cfg, registries)
    with torch.device("cpu"):
        model = build_model(cfg, registries, tokenizer.vocab_size)
    build(registries, "parallel", {"name": READER_STRATEGY}).load(source, model, None)
    params = sum(p.numel() for p in model.parameters())
    if in_place:
        return ConsolidateReport(out=source, model_file=replace_model_file(source, model.state_dict()),
                                 source=source, params=params)
    written = write_model_checkpoint(out, cfg, model.state_dict(), source=source)
    return ConsolidateReport(out=written, model_file=written / MODEL_FILE, source=source, params=params)


__all__ = ["ConsolidateReport", "consolidate"]
