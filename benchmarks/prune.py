#!/usr/bin/env python
"""Magnitude pruning: validation perplexity of a small LM at 0% / 30% / 50% sparsity, right after
pruning and after a short fine-tune that keeps the zeros.

Every stage is the real CLI, on the built-in ``stdlib`` corpus with the byte tokenizer:
``plugformer train`` (the dense model) → ``plugformer prune sparsity=S scope=...`` →
``plugformer finetune data=stdlib`` (continued pretraining on token windows; the pruned weights' gradients
are masked so they stay zero). Perplexities are the fine-tune's ``perplexity_before`` and
``perplexity_after`` on the same validation windows; the dense model gets the same fine-tune as a control.

    python benchmarks/prune.py                         # a few minutes on 2 busy cores
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

DATA = ["data.max_bytes=3000000", "data.seq_len=64", "trainer.batch_size=16", "trainer.eval_batches=8",
        "trainer.eval_every=0", "trainer.save_every=0", "trainer.callbacks=[metrics]", "seed=0"]


def plugformer(work: Path, threads: int, *args: str, hydra: bool = True) -> None:
    env = {**os.environ, "PLUGFORMER_CACHE": str(work / "cache")}
    extra = [f"threads={threads}"] if hydra else []
    proc = subprocess.run([sys.executable, "-m", "plugformer", *args, *extra], cwd=work, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"plugformer {args[0]} failed:\n{proc.stderr[-3000:]}")


def zeros_share(checkpoint: Path) -> float:
    weights = [v for k, v in load_file(str(checkpoint / "model.safetensors")).items()
               if k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sparsities", default="0.3,0.5")
    ap.add_argument("--scope", default="global", choices=["global", "layer"])
    ap.add_argument("--train-steps", type=int, default=400)
    ap.add_argument("--finetune-steps", type=int, default=60)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        plugformer(work, args.threads, "train", "tokenizer=byte", "model.n_layers=4", "model.d_model=128",
                   "model.n_heads=4", "optimizer.lr=3e-3", "scheduler.warmup_steps=20", *DATA,
                   f"trainer.max_steps={args.train_steps}", f"hydra.run.dir={work / 'dense'}")
        dense = work / "dense" / "checkpoints" / "last"
        for sparsity in [0.0, *(float(s) for s in args.sparsities.split(","))]:
            start = dense
            if sparsity > 0:
                start = work / f"pruned-{sparsity}"
                plugformer(work, args.threads, "prune", f"checkpoint={dense}", f"sparsity={sparsity}",
                           f"scope={args.scope}", f"out={start}", hydra=False)
            run = work / f"ft-{sparsity}"
            plugformer(work, args.threads, "finetune", f"checkpoint={start}", "data=stdlib", *DATA,
                       f"trainer.max_steps={args.finetune_steps}", "optimizer.lr=1e-3", "scheduler=constant",
                       f"hydra.run.dir={run}")
            result = json.loads((run / "finetune.json").read_text())
            rows.append({"sparsity": sparsity, "zeros": zeros_share(start),
                         "zeros_after_finetune": zeros_share(run / "checkpoints" / "last"),
                         "perplexity_pruned": result["perplexity_before"],
                         "perplexity_finetuned": result["perplexity_after"]})
    dense_ppl = rows[0]["perplexity_pruned"]
    print(f"stdlib corpus, byte tokenizer, 4x128 model trained {args.train_steps} steps; pruning scope={args.scope}; "
          f"fine-tune {args.finetune_steps} steps (zeros kept):")
    print(f"  {'sparsity':>8} {'zeros':>7} {'ppl pruned':>11} {'vs dense':>9} {'ppl after FT':>13} "
          f"{'zeros after FT':>15}")
    for r in rows:
        print(f"  {r['sparsity']:>8.0%} {r['zeros']:>7.1%} {r['perplexity_pruned']:>11.3f} "
              f"{r['perplexity_pruned'] / dense_ppl - 1:>+9.1%} {r['perplexity_finetuned']:>13.3f} "
              f"{r['zeros_after_finetune']:>15.1%}")
    print(f"  ({time.perf_counter() - t0:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps({"scope": args.scope, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
