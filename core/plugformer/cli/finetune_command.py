"""``plugformer finetune checkpoint=DIR data=<task or file.jsonl> [objective=sft|distill|dpo]
[adapter=lora|none] ...``: Hydra config ``finetune``, run by :func:`plugformer.training.finetune.run_finetune`.

``data=FILE.jsonl`` (any existing file) is shorthand for ``data=jsonl data.path=<absolute FILE>``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from plugformer.errors import PlugformerError
from plugformer.plugins import PluginHost

RECORD_SUFFIXES = (".jsonl", ".json")


def expand_data_file(args: list[str]) -> list[str]:
    """Rewrite ``data=<records file>`` into the ``jsonl`` source with its absolute path."""
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        if eq and key == "data" and (value.endswith(RECORD_SUFFIXES) or "/" in value or Path(value).is_file()):
            path = Path(value).expanduser()
            if not path.is_file():
                raise PlugformerError(f"data={value}: no such records file (expected a .jsonl file, or a task "
                                      "name such as data=addition)")
            out += ["data=jsonl", f"data.path={path.resolve()}"]
        else:
            out.append(a)
    return out


def _check(cfg: Any, host: PluginHost) -> None:
    from plugformer.checkpoint import check_checkpoint_dir

    check_checkpoint_dir(cfg.checkpoint)
    for family in ("objective", "optimizer", "scheduler", "parallel", "data", "adapter", "quantizer"):
        host.registries[family].get(cfg[family].name)


def _job(cfg: Any, host: PluginHost) -> Any:
    from hydra.core.hydra_config import HydraConfig

    from plugformer.training.finetune import run_finetune

    result = run_finetune(cfg, Path(HydraConfig.get().runtime.output_dir), host)
    if "exact_match_before" in result:
        score = (f"exact match on {result['held_out_records']} held-out records: {result['exact_match_before']:.3f} "
                 f"before, {result['exact_match_after']:.3f} after")
    else:
        score = (f"validation perplexity: {result['perplexity_before']:.3f} before, "
                 f"{result['perplexity_after']:.3f} after")
    print(f"{score} {result['steps']} steps ({result['trainable_params']:,} of {result['params']:,} "
          "parameters trained)")
    return result


def run(args: list[str]) -> int:
    from plugformer.cli.hydra_commands import run_hydra

    return run_hydra("finetune", expand_data_file(args), _job, check=_check)
