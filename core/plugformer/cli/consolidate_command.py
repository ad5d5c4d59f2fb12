"""``plugformer consolidate checkpoint=DIR [out=DIR]``: one full ``model.safetensors`` from a sharded
(``dcp/``) checkpoint, in a single process; the work is :func:`plugformer.ops.consolidate`."""
from __future__ import annotations

import sys
import time

from plugformer.commands import parse_keyvalues

KEYS = ("checkpoint", "out")

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


def run(args: list[str]) -> int:
    """``plugformer consolidate checkpoint=DIR [out=DIR]``."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse(args)
    from plugformer.checkpoint import DCP_DIR
    from plugformer.ops import consolidate

    started = time.perf_counter()
    report = consolidate(values["checkpoint"], values.get("out"))
    print(f"consolidated {report.params:,} parameters from {report.source / DCP_DIR} into {report.model_file} "
          f"in {time.perf_counter() - started:.1f}s")
    return 0
