"""``plugformer export-hf checkpoint=DIR out=DIR``: a plugformer checkpoint → a Hugging Face model directory."""
from __future__ import annotations

import sys
from pathlib import Path

from plugformer.checkpoint import resolve_checkpoint
from plugformer.commands import parse_keyvalues

KEYS = ("checkpoint", "out", "adapter")

USAGE = """\
usage: plugformer export-hf checkpoint=DIR [adapter=DIR] out=DIR

Writes a Hugging Face model directory (config.json, model.safetensors, and tokenizer.json when the
tokenizer has one) that transformers.AutoModelForCausalLM.from_pretrained(out) loads: GPT-2 for
position=learned norm=layernorm mlp=gelu, Llama for position=rope norm=rmsnorm mlp=swiglu. A component
with no Hugging Face equivalent (alibi, sinusoidal, sliding-window attention, ...) is refused by name.
DIR may also be a run directory (its checkpoints/last is used).

A checkpoint trained with adapter=lora (or a plain base with adapter=DIR, a PEFT adapter directory)
exports its base model to out/ and the adapter, renamed for the HF model, to out/adapter/:
peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(out), out + "/adapter").

examples:
  plugformer export-hf checkpoint=runs/<run>/checkpoints/last out=export/my-llama
  plugformer export-hf checkpoint=runs/base adapter=runs/sft/checkpoints/last/adapter out=export/base-sft
"""


def run(args: list[str]) -> int:
    """Parse, export, print a one-line summary."""
    from plugformer_hf.export_hf import export_hf

    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    values = parse_keyvalues("export-hf", args, KEYS, required=("checkpoint", "out"))
    adapter = Path(values["adapter"]).expanduser() if values.get("adapter") else None
    result = export_hf(resolve_checkpoint(values["checkpoint"]), Path(values["out"]).expanduser(), adapter=adapter)
    tok = "with tokenizer.json" if result.tokenizer else "without a tokenizer (this tokenizer has no tokenizer.json)"
    lora = f" and its adapter ({result.adapter_tensors} tensors) to {result.out / 'adapter'}" \
        if result.adapter_tensors else ""
    print(f"exported {result.family} ({result.n_tensors} tensors) {tok} to {result.out}{lora} in "
          f"{result.seconds:.1f}s")
    return 0
