"""``plugformer prune checkpoint=DIR sparsity=0.3 [scope=global|layer] out=DIR``: a magnitude-pruned
copy of a checkpoint; the work is :func:`plugformer.ops.prune`."""
from __future__ import annotations

import sys
import time

from plugformer.commands import parse_keyvalues
from plugformer.errors import PlugformerError

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
    values = parse_keyvalues("prune", args, KEYS, ("checkpoint", "sparsity", "out"))
    try:
        float(values["sparsity"])
    except ValueError:
        raise PlugformerError(f"sparsity={values['sparsity']!r} is not a number; use a fraction in [0, 1)") from None
    return values


def run(args: list[str]) -> int:
    """``plugformer prune checkpoint=DIR sparsity=F [scope=global|layer] out=DIR``."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse(args)
    from plugformer.ops import prune

    started = time.perf_counter()
    report = prune(values["checkpoint"], values["out"], float(values["sparsity"]), values.get("scope", "global"))
    print(f"pruned {len(report.params)} weight matrices to {report.reached:.1%} zeros "
          f"(scope={report.scope}) into {values['out']} in {time.perf_counter() - started:.1f}s")
    return 0
