"""``plugformer tokenizer train tokenizer=NAME [overrides] out=DIR``: train (or copy) a tokenizer alone.

The tokenizer and data nodes are composed from the ``train`` config exactly as training composes
them, so ``tokenizer=bpe tokenizer.vocab_size=8000 data=text data.path=corpus/`` means the same here
as on ``plugformer train``. The result is the tokenizer's own files in ``DIR`` (for bpe, wordpiece
and unigram a ``tokenizer.json`` that ``tokenizer=hf tokenizer.path=DIR`` loads).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from plugformer.errors import PlugformerError, did_you_mean

SUBCOMMANDS = ("train",)
CONFIG_FILE = "plugformer_tokenizer.yaml"  # the composed tokenizer node, for the record
SAMPLE_CHARS = 200  # length of the round-trip check's sample

USAGE = """\
usage: plugformer tokenizer train tokenizer=NAME [tokenizer.KEY=VALUE ...] [data=NAME data.KEY=VALUE ...] out=DIR

Fits the tokenizer on the data's train split (or copies a pre-trained one) and writes its files to DIR.

examples:
  plugformer tokenizer train tokenizer=bpe tokenizer.vocab_size=8000 out=tok/
  plugformer tokenizer train tokenizer=unigram data=text data.path=corpus.txt out=tok/
"""


def split_out(args: list[str]) -> tuple[list[str], Path]:
    """(Hydra overrides, the ``out=`` directory); a missing or repeated ``out`` is an error."""
    outs = [a.partition("=")[2] for a in args if a.startswith("out=")]
    if len(outs) != 1 or not outs[0]:
        raise PlugformerError("plugformer tokenizer train needs exactly one out=DIR (where the files go)")
    return [a for a in args if not a.startswith("out=")], Path(outs[0]).expanduser()


def _stamps(directory: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of each file in ``directory``: what changed between two calls was written."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in directory.iterdir() if p.is_file()}


def _sample(source: Any) -> str:
    """A short piece of text for the round-trip check: the start of the first val (else train) document."""
    for split in ("val", "train"):
        doc = next((d for d in source.documents(split) if d), None)
        if doc:
            return doc[:SAMPLE_CHARS]
    return "hello world\n"


def train(args: list[str]) -> int:
    """Compose, build, fit on the train split, save; print a summary and a round-trip check."""
    from omegaconf import OmegaConf

    from plugformer.build import build
    from plugformer.config.compose import compose_checked, prepare, split_args

    if any(a in ("-h", "--help") for a in args):
        print(USAGE, end="")
        return 0
    overrides, out = split_out(args)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):  # never over another tokenizer or checkpoint
        raise PlugformerError(f"out={out} already exists and is not empty; choose a new directory")
    overrides, multirun, _ = split_args(overrides)
    if multirun:
        raise PlugformerError("plugformer tokenizer train does not sweep (-m); run it once per tokenizer")
    host = prepare()
    cfg = compose_checked("train", overrides, host)
    name = cfg.tokenizer.name
    started = time.perf_counter()
    tokenizer = build(host.registries, "tokenizer", cfg.tokenizer)
    source = build(host.registries, "data", cfg.data)
    if tokenizer.needs_fit:
        tokenizer.fit(source.documents("train"))
    out.mkdir(parents=True, exist_ok=True)
    before = _stamps(out)
    tokenizer.save(out)
    (out / CONFIG_FILE).write_text(OmegaConf.to_yaml(cfg.tokenizer), encoding="utf-8")
    after = _stamps(out)
    written = sorted(n for n, stamp in after.items() if before.get(n) != stamp)
    seconds = time.perf_counter() - started
    specials = ", ".join(f"{k} {v}" for k, v in (("eos", tokenizer.eos_id), ("pad", tokenizer.pad_id),
                                                   ("mask", tokenizer.mask_id)) if v is not None)
    print(f"tokenizer {name}: vocab_size {tokenizer.vocab_size} ({specials}); wrote {', '.join(written)} "
          f"to {out} in {seconds:.1f}s")
    sample = _sample(source)
    ids = tokenizer.encode(sample)
    exact = tokenizer.decode(ids) == sample
    print(f"round trip on a {len(sample)}-char sample: {len(ids)} tokens "
          f"({len(sample) / max(len(ids), 1):.2f} chars/token), "
          f"{'exact' if exact else 'NOT exact (this tokenizer normalizes text)'}")
    return 0


def run(args: list[str]) -> int:
    """``plugformer tokenizer <sub-command> ...``: dispatch to the sub-command."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    sub, rest = args[0], args[1:]
    if sub not in SUBCOMMANDS:
        raise PlugformerError(f"unknown tokenizer sub-command '{sub}'{did_you_mean(sub, SUBCOMMANDS)}; "
                              f"sub-commands: {', '.join(SUBCOMMANDS)}")
    return train(rest)
