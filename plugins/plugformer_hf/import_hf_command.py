"""``plugformer import-hf DIR [out=DIR]``: a local Hugging Face GPT-2/Llama model → a plugformer checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path

from plugformer.commands import parse_keyvalues

KEYS = ("dir", "out")

USAGE = """\
usage: plugformer import-hf DIR [out=DIR]

Converts the Hugging Face model in DIR (config.json, model.safetensors, tokenizer.json; GPT-2 or Llama
family) into a plugformer checkpoint directory (default: ./<name of DIR>-plugformer) that
`plugformer generate checkpoint=...` and `plugformer eval checkpoint=...` read. Components map to
plugins: learned positions / rope, layernorm / rmsnorm, gelu / swiglu, grouped-query heads, tied or
untied embeddings. A setting with no plugformer equivalent is an error naming the config.json field.

examples:
  plugformer import-hf ~/models/gpt2 out=ckpt/gpt2
  plugformer generate checkpoint=ckpt/gpt2 prompt="Hello" temperature=0
"""


def run(args: list[str]) -> int:
    """Parse, convert, print a one-line summary."""
    from plugformer_hf.import_hf import import_hf

    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse_keyvalues("import-hf", args, KEYS, required=("dir",), positional="dir")
    src = Path(values["dir"]).expanduser()
    out = Path(values["out"]).expanduser() if "out" in values else Path(f"{src.resolve().name}-plugformer")
    result = import_hf(src, out)
    parts = " ".join(f"{k}={v}" for k, v in result.components.items())
    print(f"imported {result.family} from {src}: {result.n_params:,} parameters, vocab {result.vocab_size}, "
          f"{parts} -> {result.out} in {result.seconds:.1f}s")
    return 0
