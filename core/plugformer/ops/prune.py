"""Magnitude pruning of a checkpoint (see :mod:`plugformer.model.pruning`).

The output is a model-only checkpoint that ``generate`` and ``finetune`` read: ``model.safetensors``
(zeros in place), the tokenizer, ``plugins.json`` and ``config.yaml`` with a ``pruning`` block (sparsity,
scope, the pruned parameters and the sparsity reached). ``plugformer finetune checkpoint=OUT ...`` then
keeps those zeros fixed (``keep_sparsity=true``, the default).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from plugformer.checkpoint import (
    check_checkpoint_dir,
    is_quantized,
    load_config,
    load_model_for_inference,
    trained_adapter,
    write_model_checkpoint,
)
from plugformer.checkpoint.writer import check_new_dir
from plugformer.errors import ConfigError
from plugformer.model.pruning import MagnitudePruning, sparsity_report
from plugformer.ops._registries import registries_or_loaded
from plugformer.registry import Registries


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune` wrote: the directory, the source, the options, the pruned parameters and the
    fraction of zeros reached over them."""

    out: Path
    source: Path
    sparsity: float
    scope: str
    params: list[str]
    reached: float

    def record(self) -> dict[str, object]:
        """The ``pruning`` block of the pruned checkpoint's config."""
        return {"sparsity": self.sparsity, "scope": self.scope, "source": str(self.source), "params": self.params,
                "reached": self.reached}


def prune(checkpoint: str | Path, out: str | Path, sparsity: float, scope: str = "global", *,
          registries: Registries | None = None) -> PruneReport:
    """Zero the ``sparsity`` smallest-magnitude weights of the blocks' linear layers of ``checkpoint`` (one
    threshold over all of them with ``scope="global"``, each layer on its own with ``"layer"``) and write
    the pruned checkpoint to ``out`` (absent or empty)."""
    pruning = MagnitudePruning(sparsity, scope)  # checks the options before anything is loaded
    source = check_checkpoint_dir(checkpoint).resolve()
    out = check_new_dir(out)
    cfg = load_config(source)
    adapter = trained_adapter(cfg)
    if adapter is not None:
        raise ConfigError(f"checkpoint '{source}' was trained with adapter={adapter}; merge it first "
                          "(plugformer merge) and prune the merged checkpoint")
    if is_quantized(source):
        raise ConfigError(f"checkpoint '{source}' is quantized; prune the full-precision checkpoint, then quantize")
    loaded = load_model_for_inference(source, registries_or_loaded(registries), device="cpu")
    model = pruning.apply(loaded.model)
    report = PruneReport(out=out, source=source, sparsity=pruning.sparsity, scope=pruning.scope.value,
                         params=list(pruning.pruned), reached=sparsity_report(model, pruning.pruned)["total"])
    config = OmegaConf.to_container(loaded.config, resolve=True)
    config["pruning"] = report.record()
    write_model_checkpoint(out, config, model.state_dict(), source=source)
    return report


__all__ = ["PruneReport", "prune"]
