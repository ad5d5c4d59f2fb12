"""``plugformer consolidate checkpoint=DIR [out=DIR]``: one full ``model.safetensors`` from a sharded
(``dcp/``) checkpoint, in a single process without any process group.

The ``fsdp`` strategy writes the consolidated model next to its shards at every save; this command
rebuilds it when that copy is missing (or writes a model-only checkpoint elsewhere with ``out=``). The
model is built from the checkpoint's own ``config.yaml`` and tokenizer, its weights gathered from the
shards of however many ranks wrote them.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from plugformer.commands import parse_keyvalues
from plugformer.errors import PlugformerError

KEYS = ("checkpoint", "out")
SHARDED_DIR = "dcp"  # where sharded strategies put torch.distributed.checkpoint shards
READER_STRATEGY = "single"
MODEL_ONLY = ("config.yaml", "plugins.json", "tokenizer")  # what generate/export need next to the weights

USAGE = """\
usage: plugformer consolidate checkpoint=DIR [out=DIR]

Writes DIR/model.safetensors (or OUT/model.safetensors with the config and tokenizer, a checkpoint
that generate reads) from the sharded dcp/ checkpoint in DIR, as saved by parallel=fsdp on any number
of ranks. DIR may also be a run directory (its checkpoints/last is used).

examples:
  plugformer consolidate checkpoint=runs/fsdp/checkpoints/last
  plugformer consolidate checkpoint=runs/fsdp/checkpoints/step-1000 out=export/step-1000
"""


def parse(args: list[str]) -> dict[str, str]:
    """``key=value`` arguments; unknown, repeated or empty keys are errors, ``checkpoint`` is required."""
    return parse_keyvalues("consolidate", args, KEYS, required=("checkpoint",))


def checkpoint_dir(path: Path) -> Path:
    """``path`` itself, or the ``checkpoints/last`` of a run directory."""
    if not (path / "config.yaml").is_file() and (path / "checkpoints" / "last").exists():
        return (path / "checkpoints" / "last").resolve()
    return path


def consolidate(source: Path, out: Path | None = None) -> tuple[Path, int]:
    """Write ``model.safetensors`` for the sharded checkpoint ``source`` into ``out`` (default: ``source``).

    Returns (the written file, the number of parameters).
    """
    import torch
    from omegaconf import OmegaConf

    from plugformer.build import build, component_config
    from plugformer.checkpoint import MODEL_FILE, save_model
    from plugformer.model import build_model
    from plugformer.plugins import load_plugins

    if not (source / "config.yaml").is_file():
        raise PlugformerError(f"'{source}' is not a plugformer checkpoint directory (no config.yaml)")
    if not (source / SHARDED_DIR).is_dir():
        has_model = (source / MODEL_FILE).is_file()
        raise PlugformerError(f"'{source}' has no sharded dcp/ checkpoint to consolidate"
                              + (f" (its {MODEL_FILE} is already the full model)" if has_model else ""))
    registries = load_plugins().registries
    cfg = OmegaConf.load(source / "config.yaml")
    entry = registries.tokenizer.get(cfg.tokenizer.name)
    tokenizer = entry.load().load(component_config(entry, cfg.tokenizer), source / "tokenizer")
    with torch.device("cpu"):
        model = build_model(cfg, registries, tokenizer.vocab_size)
    # the one-process strategy reads every checkpoint format the strategies write (found by name in the
    # registry, like any component): here, all ranks' shards, with no process group
    reader = build(registries, "parallel", {"name": READER_STRATEGY})
    reader.load(source, model, None)
    out = out or source
    out.mkdir(parents=True, exist_ok=True)
    if out.resolve() != source.resolve():
        for name in MODEL_ONLY:
            src, dst = source / name, out / name
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            elif src.is_file():
                shutil.copy2(src, dst)
    save_model(out, model.state_dict())
    return out / MODEL_FILE, sum(p.numel() for p in model.parameters())


def run(args: list[str]) -> int:
    """``plugformer consolidate checkpoint=DIR [out=DIR]``."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse(args)
    source = checkpoint_dir(Path(values["checkpoint"]).expanduser())
    out = Path(values["out"]).expanduser() if "out" in values else None
    started = time.perf_counter()
    written, n_params = consolidate(source, out)
    print(f"consolidated {n_params:,} parameters from {source / 'dcp'} into {written} "
          f"in {time.perf_counter() - started:.1f}s")
    return 0
