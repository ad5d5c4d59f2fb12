"""The core's own commands, registered in the same :class:`~plugformer.commands.Commands` table a plugin's
``plugformer_register_commands`` hook adds to. Targets are lazy: a command's module is imported only when
it runs, so ``plugformer --help`` stays fast."""
from __future__ import annotations

from plugformer.commands import Commands

#: (name, "module:function", one-line help), in the order ``plugformer --help`` lists them
CORE_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("train", "plugformer.cli.hydra_commands:train", "train a model (Hydra config 'train'; -m for sweeps)"),
    ("generate", "plugformer.cli.hydra_commands:generate",
     "sample text from a checkpoint: checkpoint=DIR prompt=... max_new_tokens=N"),
    ("validate", "plugformer.cli.hydra_commands:validate",
     "compose and check a train config without building anything heavy"),
    ("plugins", "plugformer.cli.plugins_command:run",
     "list every component family, implementation, provider and availability"),
    ("tokenizer", "plugformer.cli.tokenizer_command:run",
     "tokenizer train tokenizer=NAME [tokenizer.vocab_size=N] [data=...] out=DIR"),
    ("finetune", "plugformer.cli.finetune_command:run",
     "fine-tune a checkpoint: checkpoint=DIR data=<task|file.jsonl> objective=sft|distill|dpo [adapter=lora]"),
    ("prune", "plugformer.cli.prune_command:run",
     "magnitude-prune a checkpoint: checkpoint=DIR sparsity=0.3 [scope=global|layer] out=DIR"),
    ("report", "plugformer.cli.report_command:run",
     "summarise a sweep directory: report.md, report.csv, report.png (loss curves)"),
    ("consolidate", "plugformer.cli.consolidate_command:run",
     "write one model.safetensors from a sharded (fsdp) checkpoint: checkpoint=DIR [out=DIR]"),
    ("merge", "plugformer.cli.merge_command:run",
     "fold an adapter into a full checkpoint: checkpoint=DIR [adapter=DIR] out=DIR"),
    ("quantize", "plugformer.cli.quantize_command:run",
     "write a quantized checkpoint: checkpoint=DIR quantizer=int8|nf4|... out=DIR"),
    ("eval", "plugformer.cli.eval_command:run",
     "perplexity of a checkpoint: checkpoint=DIR [data=PATH|NAME] [split=val] [max_batches=N]; tasks=... "
     "with an lm-eval command (plugformer_hf); eval retrieval index=DIR queries=FILE: recall@k, MRR, latency"),
    ("index", "plugformer.cli.index_command:run",
     "index build [data.path=DIR] out=DIR [embedder=...] [retriever=...]; index query index=DIR query=TEXT [k=5]"),
    ("rag", "plugformer.cli.rag_command:run",
     "answer from retrieved passages: index=DIR checkpoint=DIR question=TEXT [k=4]"),
)


def register_core_commands(commands: Commands) -> None:
    """Put the core's commands into ``commands`` (before any plugin's, so a plugin can never take one)."""
    for name, target, help_ in CORE_COMMANDS:
        commands.register(name, target, help_)


__all__ = ["CORE_COMMANDS", "register_core_commands"]
