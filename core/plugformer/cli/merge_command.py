"""``plugformer merge checkpoint=DIR [adapter=DIR] out=DIR``: fold a LoRA adapter into the base weights;
the work is :func:`plugformer.ops.merge`."""
from __future__ import annotations

import sys
import time

from plugformer.commands import parse_keyvalues

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


def run(args: list[str]) -> int:
    """``plugformer merge checkpoint=DIR [adapter=DIR] out=DIR``."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse_keyvalues("merge", args, KEYS, ("checkpoint", "out"))
    from plugformer.ops import merge

    started = time.perf_counter()
    report = merge(values["checkpoint"], values["out"], values.get("adapter"))
    print(f"merged adapter '{report.adapter}' into {report.params:,} parameters: {report.out} "
          f"({time.perf_counter() - started:.1f}s)")
    return 0
