"""``plugformer prune checkpoint=DIR sparsity=0.3 [scope=global|layer] out=DIR``: a magnitude-pruned
copy of a checkpoint (see :mod:`plugformer.model.pruning`).

The output is a model-only checkpoint that ``generate`` and ``finetune`` read: ``model.safetensors``
(zeros in place), the tokenizer, ``plugins.json`` and ``config.yaml`` with a ``pruning`` block (sparsity,
scope, the pruned parameters and the sparsity reached). ``plugformer finetune checkpoint=OUT ...`` then
keeps those zeros fixed (``keep_sparsity=true``, the default). Written under a temporary name and
renamed into place, so an interrupted run leaves no partial directory.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from plugformer.errors import PlugformerError, did_you_mean

KEYS = ("checkpoint", "sparsity", "scope", "out")
USAGE = """\
usage: plugformer prune checkpoint=DIR sparsity=FRACTION [scope=global|layer] out=DIR

Zeros the FRACTION smallest-magnitude weights of the transformer blocks' linear layers (one threshold
over all of them with scope=global, the default; each layer on its own with scope=layer) and writes the
pruned checkpoint to OUT. Fine-tune it afterwards with the zeros kept:
  plugformer finetune checkpoint=OUT data=addition trainer.max_steps=100

examples:
  plugformer prune checkpoint=runs/base/checkpoints/last sparsity=0.5 out=pruned/50
  plugformer prune checkpoint=runs/base sparsity=0.3 scope=layer out=pruned/30-layer
"""


def parse(args: list[str]) -> dict[str, str]:
    """``key=value`` arguments; unknown or repeated keys are errors; checkpoint, sparsity and out are required."""
    values: dict[str, str] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            raise PlugformerError(f"plugformer prune takes key=value arguments, got '{arg}'; keys: {', '.join(KEYS)}")
        if key not in KEYS:
            raise PlugformerError(f"plugformer prune has no option '{key}'{did_you_mean(key, KEYS)}; "
                                  f"keys: {', '.join(KEYS)}")
        if key in values:
            raise PlugformerError(f"plugformer prune: '{key}' given twice")
        values[key] = value
    for key in ("checkpoint", "sparsity", "out"):
        if not values.get(key):
            raise PlugformerError(f"plugformer prune needs {key}=... (usage: plugformer prune checkpoint=DIR "
                                  "sparsity=0.3 [scope=global|layer] out=DIR)")
    try:
        float(values["sparsity"])
    except ValueError:
        raise PlugformerError(f"sparsity={values['sparsity']!r} is not a number; use a fraction in [0, 1)") from None
    return values


def prune_checkpoint(source: Path, out: Path, sparsity: float, scope: str = "global") -> dict[str, object]:
    """Write the pruned copy of checkpoint ``source`` to ``out``; returns the pruning record."""
    from omegaconf import OmegaConf

    from plugformer.checkpoint import save_model
    from plugformer.inference import load_model_for_inference, quantization_record
    from plugformer.model.pruning import MagnitudePruning, sparsity_report
    from plugformer.plugins import load_plugins
    from plugformer.training.finetune import checkpoint_dir

    pruning = MagnitudePruning(sparsity, scope)  # checks the options before anything is loaded
    source = checkpoint_dir(source)
    if out.exists() and any(out.iterdir()):
        raise PlugformerError(f"out={out} already exists and is not empty; choose a new directory")
    cfg = OmegaConf.load(source / "config.yaml")
    trained_with = (cfg.get("adapter") or {}).get("name", "none")
    if trained_with != "none":
        raise PlugformerError(f"checkpoint '{source}' was trained with adapter={trained_with}; merge it first "
                              "(plugformer merge) and prune the merged checkpoint")
    if quantization_record(source) is not None:
        raise PlugformerError(f"checkpoint '{source}' is quantized; prune the full-precision checkpoint, then quantize")
    loaded = load_model_for_inference(source, load_plugins().registries, device="cpu")
    model = pruning.apply(loaded.model)
    report = sparsity_report(model, pruning.pruned)
    record = {"sparsity": pruning.sparsity, "scope": pruning.scope.value, "source": str(source),
              "params": pruning.pruned, "reached": report["total"]}
    cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg["pruning"] = record
    tmp = out.parent / f".tmp-{out.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(tmp, model.state_dict())
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    shutil.copytree(source / "tokenizer", tmp / "tokenizer")
    if (source / "plugins.json").is_file():
        shutil.copy2(source / "plugins.json", tmp / "plugins.json")
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return record


def run(args: list[str]) -> int:
    """``plugformer prune checkpoint=DIR sparsity=F [scope=global|layer] out=DIR``."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse(args)
    started = time.perf_counter()
    record = prune_checkpoint(Path(values["checkpoint"]).expanduser(), Path(values["out"]).expanduser(),
                              float(values["sparsity"]), values.get("scope", "global"))
    print(f"pruned {len(record['params'])} weight matrices to {record['reached']:.1%} zeros "
          f"(scope={record['scope']}) into {values['out']} in {time.perf_counter() - started:.1f}s")
    return 0
