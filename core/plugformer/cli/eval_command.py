"""``plugformer eval checkpoint=DIR [data=...] [split=...] [max_batches=N]``: perplexity of a checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from plugformer.checkpoint import resolve_checkpoint
from plugformer.commands import parse_keyvalues, positive_int
from plugformer.errors import ConfigError, did_you_mean

KEYS = ("checkpoint", "data", "split", "max_batches", "batch_size", "seq_len", "device", "precision", "adapter",
        "out", "tasks", "tasks_dir", "limit")
#: ``plugformer eval ... tasks=...`` runs this command (plugformer_hf registers it), with the same arguments
TASK_COMMAND = "lm-eval"
SPLITS = ("train", "val", "all")
PRECISIONS = ("fp32", "bf16")

USAGE = """\
usage: plugformer eval checkpoint=DIR [data=PATH|NAME] [split=val|train|all] [max_batches=N]
                       [batch_size=8] [seq_len=N] [device=auto] [precision=fp32] [adapter=DIR] [out=FILE.json]
       plugformer eval checkpoint=DIR tasks=NAME[,NAME...] [tasks_dir=DIR] [limit=N] [out=FILE.json]
       plugformer eval retrieval queries=FILE.jsonl index=DIR [k=10]     (plugformer eval retrieval --help)

Reports the mean next-token loss and perplexity of the checkpoint's model over consecutive windows of
seq_len tokens (default: the checkpoint's data.seq_len). The text is, by default, the validation split
of the data source the checkpoint was trained on (as the trainer evaluates it); data=PATH reads a .txt
or .jsonl file (or a directory of them; default split=all), data=NAME a registered data source with its
default options. out=FILE writes the figures as JSON too.

With tasks=, the lm-eval command of the plugformer_hf plugin runs those lm-evaluation-harness tasks
(pip install 'plugformer[lm_eval]') on the checkpoint instead: tasks from its catalogue or YAML tasks in
tasks_dir (e.g. over a local JSONL file; set
HF_DATASETS_OFFLINE=1 to be sure nothing is downloaded), at most limit documents each.

examples:
  plugformer eval checkpoint=runs/<run>/checkpoints/last
  plugformer eval checkpoint=ckpt/gpt2 data=corpus.txt max_batches=20
  plugformer eval checkpoint=ckpt/gpt2 tasks=my_task tasks_dir=my_tasks/ limit=100
"""


def data_source(spec: str | None, split: str | None, cfg: Any, registries: Any) -> tuple[Any, str, str | None, str]:
    """(text source, split, cache dir, description) for ``data=spec`` (None: the checkpoint's data) and the
    requested ``split`` (None: ``all`` of a file, else ``val``)."""
    from plugformer.build import build

    if spec is None:
        return build(registries, "data", cfg.data), split or "val", cfg.data.get("cache_dir"), f"data={cfg.data.name}"
    path = Path(spec).expanduser()
    if path.exists():
        split = split or "all"
        # all of a file: no validation hold-out, so the text is read in order, in one piece
        node = {"name": "text", "path": str(path.resolve()), **({"val_fraction": 0.0} if split == "all" else {})}
        return build(registries, "data", node), split, None, str(path)
    split = split or "val"
    if spec in registries.data:
        return build(registries, "data", {"name": spec}), split, None, f"data={spec}"
    raise ConfigError(f"data={spec!r} is neither an existing file or directory nor a registered data source"
                      f"{did_you_mean(spec, registries.data.names())}; data sources: "
                      f"{', '.join(registries.data.names())}")


def split_tokens(source: Any, tokenizer: Any, split: str, cache_dir: str | None) -> Any:
    """The token ids of ``split`` (``all``: train then val), through the token cache training uses."""
    import numpy as np

    from plugformer.tokens import tokenize_to_cache

    if split == "all":
        return np.concatenate([tokenize_to_cache(source, tokenizer, s, cache_dir) for s in ("train", "val")])
    return tokenize_to_cache(source, tokenizer, split, cache_dir)


def run_task_evaluation(args: list[str]) -> int:
    """``tasks=...``: hand the arguments to the ``lm-eval`` command a plugin registers (``plugformer_hf``,
    through lm-evaluation-harness); one line saying what to install when none does."""
    from plugformer.errors import UnavailableError
    from plugformer.plugins import load_plugins

    commands = load_plugins().commands
    if TASK_COMMAND not in commands:
        raise UnavailableError(f"plugformer eval tasks=... runs the '{TASK_COMMAND}' command, which no loaded plugin "
                               "provides (plugformer_hf does: pip install 'plugformer[lm_eval]', and do not block "
                               "the 'hf' plugin)")
    return commands.get(TASK_COMMAND).load()(args)


def run(args: list[str]) -> int:
    """Load the checkpoint, tokenize the text, print (and optionally write) loss and perplexity."""
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "retrieval":
        from plugformer.cli.eval_retrieval_command import run as run_retrieval

        return run_retrieval(args[1:])
    values = parse_keyvalues("eval", args, KEYS, required=("checkpoint",))
    if "tasks" in values:
        return run_task_evaluation(args)
    extra = sorted(set(values) & {"tasks_dir", "limit"})
    if extra:
        raise ConfigError(f"plugformer eval: {', '.join(extra)} only apply with tasks=...")
    if values.get("split", "val") not in SPLITS:
        raise ConfigError(f"plugformer eval: split={values['split']!r}{did_you_mean(values['split'], SPLITS)}; "
                          f"splits: {', '.join(SPLITS)}")
    precision = values.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise ConfigError(f"plugformer eval: precision={precision!r}; choices: {', '.join(PRECISIONS)}")
    max_batches, batch_size, seq_len = (positive_int("eval", values, key)
                                        for key in ("max_batches", "batch_size", "seq_len"))
    if "out" in values:
        from plugformer.checkpoint import check_new_file

        check_new_file(values["out"])  # before any work

    from plugformer.build import entry_class
    from plugformer.checkpoint import write_json
    from plugformer.evaluation import perplexity
    from plugformer.checkpoint import load_model_for_inference
    from plugformer.plugins import load_plugins

    registries = load_plugins().registries
    ckpt = resolve_checkpoint(values["checkpoint"])
    loaded = load_model_for_inference(ckpt, registries, adapter=values.get("adapter"),
                                      device=values.get("device", "auto"))
    cfg = loaded.config
    objective = cfg.objective.name
    if not getattr(entry_class(registries, "objective", objective), "causal", True):
        raise ConfigError(f"plugformer eval reports causal (next-token) perplexity, but the checkpoint was trained "
                          f"with the bidirectional objective '{objective}'")
    source, split, cache_dir, described = data_source(values.get("data"), values.get("split"), cfg, registries)
    tokens = split_tokens(source, loaded.tokenizer, split, cache_dir)
    context = int(cfg.model.max_seq_len or cfg.data.seq_len)
    seq_len = min(seq_len or int(cfg.data.seq_len), context)
    if len(tokens) < seq_len + 1:
        raise ConfigError(f"{described} split={split} has {len(tokens)} tokens, fewer than one window of "
                          f"seq_len={seq_len} (+1); use more text or a smaller seq_len")
    result = perplexity(loaded.model, tokens, seq_len, batch_size=batch_size or 8, max_batches=max_batches,
                        device=loaded.device, precision=precision, split=split)
    print(f"eval {ckpt} on {described} split={split}: loss {result.loss:.4f}, perplexity {result.perplexity:.3f} "
          f"over {result.tokens:,} tokens ({result.windows} windows of {seq_len}) in {result.seconds:.1f}s "
          f"({result.tokens / max(result.seconds, 1e-9):,.0f} tokens/s)")
    if "out" in values:
        write_json(Path(values["out"]).expanduser(), {"checkpoint": str(ckpt), "data": described, "split": split,
                                                      **result.as_dict()})
    return 0
