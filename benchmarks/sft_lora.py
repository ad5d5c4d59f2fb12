#!/usr/bin/env python
"""SFT with LoRA on a shipped task: held-out exact match of the base vs after LoRA, the trainable
share, and LoRA fine-tuning tokens/s side by side with HF transformers + peft on the same-size GPT-2.

Quality (every stage is the real CLI, in a subprocess):

1. ``plugformer train`` one step on the ``uppercase`` task: a (practically) random byte-level model;
2. the **base**: ``plugformer finetune adapter=none`` teaches it the skill in one wording
   (``data.prompt="{text}:"``, e.g. ``abc:`` → ``ABC``): a model that has the skill but has never seen
   the task's own format;
3. ``plugformer finetune adapter=lora`` on the task's format (``up abc=`` → ``ABC``): exact match on
   held-out strings (never in any training split, whichever wording) before and after.

Throughput: one LoRA training step (forward, cross-entropy, backward, AdamW on the adapter weights) of
a plugformer GPT-2-style model with the ``lora`` adapter vs ``transformers.GPT2LMHeadModel`` (built from
a config, no download) with ``peft.get_peft_model``, same dims and LoRA rank on the same layers, in
alternating rounds; median step times, ratio printed.

    python benchmarks/sft_lora.py                     # both parts (a few minutes on 2 busy cores)
    python benchmarks/sft_lora.py --skip-quality      # throughput only
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = ["tokenizer=byte", "model.n_layers=2", "model.d_model=128", "model.n_heads=4", "data.seq_len=32"]
TASK = ["data=uppercase", "data.n_train=8000", "data.n_val=200", "data.seq_len=32", "eval_examples=200",
        "max_new_tokens=10", "optimizer.weight_decay=0.0", "scheduler.warmup_steps=20",
        "trainer.callbacks=[metrics]", "trainer.eval_every=0"]


def plugformer(*args: str, cwd: Path, threads: int) -> str:
    env = {**os.environ, "PLUGFORMER_CACHE": str(cwd / "cache")}
    proc = subprocess.run([sys.executable, "-m", "plugformer", *args, f"threads={threads}"], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"plugformer {args[0]} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def quality(work: Path, threads: int, base_steps: int, lora_steps: int, rank: int) -> dict:
    t0 = time.perf_counter()
    plugformer("train", *MODEL, "data=uppercase", "data.prompt='{text}:'", "trainer.max_steps=1",
               "trainer.callbacks=[]", f"hydra.run.dir={work / 'init'}", cwd=work, threads=threads)
    plugformer("finetune", f"checkpoint={work / 'init'}", *TASK, "data.prompt='{text}:'", "adapter=none",
               "optimizer.lr=3e-3", "trainer.batch_size=64", f"trainer.max_steps={base_steps}",
               f"hydra.run.dir={work / 'base'}", cwd=work, threads=threads)
    base = json.loads((work / "base" / "finetune.json").read_text())
    plugformer("finetune", f"checkpoint={work / 'base'}", *TASK, "adapter=lora", f"adapter.r={rank}",
               "optimizer.lr=1e-2", "trainer.batch_size=32", f"trainer.max_steps={lora_steps}",
               f"hydra.run.dir={work / 'lora'}", cwd=work, threads=threads)
    lora = json.loads((work / "lora" / "finetune.json").read_text())
    summary = json.loads((work / "lora" / "summary.json").read_text())
    return {"base_skill_in_its_own_wording": base["exact_match_after"],
            "base_exact_match_on_task": lora["exact_match_before"],
            "lora_exact_match_on_task": lora["exact_match_after"],
            "held_out_records": lora["held_out_records"], "trainable_params": lora["trainable_params"],
            "params": lora["params"], "trainable_share": lora["trainable_params"] / lora["params"],
            "lora_steps": lora["steps"], "lora_wall_s": summary["wall_s"], "wall_s": time.perf_counter() - t0}


# -- throughput ----------------------------------------------------------------------------------------
def build_plugformer(layers: int, d: int, heads: int, vocab_seq: tuple[int, int], rank: int):
    import torch
    from plugformer.build import build
    from plugformer.config import compose_checked, prepare
    from plugformer.model import build_model

    host = prepare()
    vocab, seq = vocab_seq
    cfg = compose_checked("train", ["model=gpt2_tiny", "attention=sdpa", f"model.n_layers={layers}",
                                    f"model.d_model={d}", f"model.n_heads={heads}", f"data.seq_len={seq}",
                                    "model.dropout=0.0"], host)
    torch.manual_seed(0)
    model = build_model(cfg, host.registries, vocab)
    return build(host.registries, "adapter", {"name": "lora", "r": rank, "alpha": 2.0 * rank}).apply(model)


def build_hf(layers: int, d: int, heads: int, vocab_seq: tuple[int, int], rank: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab, seq = vocab_seq
    config = GPT2Config(vocab_size=vocab, n_positions=seq, n_embd=d, n_layer=layers, n_head=heads, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_pytorch_tanh",
                        bos_token_id=vocab - 3, eos_token_id=vocab - 3)
    torch.manual_seed(0)
    try:
        model = GPT2LMHeadModel(config, attn_implementation="sdpa")
    except TypeError:
        config._attn_implementation = "sdpa"
        model = GPT2LMHeadModel(config)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, fan_in_fan_out=True,
                      target_modules=["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"])
    return get_peft_model(model, lora)


def throughput(threads: int, steps: int, warmup: int, rank: int, batch: int, seq: int, layers: int, d: int,
               heads: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    vocab = 259
    models = {"plugformer+lora": build_plugformer(layers, d, heads, (vocab, seq), rank),
              "hf_gpt2+peft": build_hf(layers, d, heads, (vocab, seq), rank)}
    opts = {k: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3) for k, m in models.items()}
    shares = {k: (sum(p.numel() for p in m.parameters() if p.requires_grad), sum(p.numel() for p in m.parameters()))
              for k, m in models.items()}
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, vocab, (batch, seq + 1), generator=gen) for _ in range(4)]

    def step(name: str, tokens) -> float:
        model, opt = models[name], opts[name]
        t0 = time.perf_counter()
        out = model(tokens[:, :-1])
        logits = out.logits if hasattr(out, "logits") else out
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {k: [] for k in models}
    order = list(models)
    for i in range(warmup + steps):
        for name in (order if i % 2 == 0 else order[::-1]):
            dt = step(name, batches[i % len(batches)])
            if i >= warmup:
                times[name].append(dt)
    tokens = batch * seq
    out = {name: {"tokens_per_s_median": tokens / statistics.median(ts), "tokens_per_s_best": tokens / min(ts),
                  "trainable": shares[name][0], "params": shares[name][1]} for name, ts in times.items()}
    out["ratio_median"] = out["plugformer+lora"]["tokens_per_s_median"] / out["hf_gpt2+peft"]["tokens_per_s_median"]
    out["ratio_best"] = out["plugformer+lora"]["tokens_per_s_best"] / out["hf_gpt2+peft"]["tokens_per_s_best"]
    out["shape"] = {"layers": layers, "d_model": d, "heads": heads, "batch": batch, "seq": seq, "rank": rank,
                    "threads": threads}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    ap.add_argument("--base-steps", type=int, default=150)
    ap.add_argument("--lora-steps", type=int, default=600)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--steps", type=int, default=20, help="timed throughput steps per model")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="write the figures here too")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args()
    results: dict = {}
    if not args.skip_quality:
        with tempfile.TemporaryDirectory() as tmp:
            work = (args.workdir or Path(tmp)).resolve()
            work.mkdir(parents=True, exist_ok=True)
            q = quality(work, args.threads, args.base_steps, args.lora_steps, args.rank)
        results["quality"] = q
        print(f"task 'uppercase' ({q['held_out_records']} held-out strings), byte-level 2x128 model")
        print(f"  base (full SFT on the '{{text}}:' wording) in its own wording: "
              f"{q['base_skill_in_its_own_wording']:.1%}")
        print(f"  exact match on the task format 'up {{text}}=': base {q['base_exact_match_on_task']:.1%} -> "
              f"LoRA r={args.rank} after {q['lora_steps']} steps {q['lora_exact_match_on_task']:.1%} "
              f"(target >= 80%)")
        print(f"  LoRA trains {q['trainable_params']:,} of {q['params']:,} parameters = {q['trainable_share']:.2%} "
              f"(target <= 5%); LoRA stage {q['lora_wall_s']:.0f}s, all stages {q['wall_s']:.0f}s")
    if not args.skip_throughput:
        t = throughput(args.threads, args.steps, args.warmup, 8, 8, 128, 4, 256, 4)
        results["throughput"] = t
        s = t["shape"]
        print(f"LoRA fine-tune step, GPT-2 {s['layers']}x{s['d_model']} ({s['heads']} heads), r={s['rank']} on "
              f"attention+MLP linears, batch {s['batch']}x{s['seq']}, {s['threads']} threads:")
        for name in ("plugformer+lora", "hf_gpt2+peft"):
            r = t[name]
            print(f"  {name:<16} {r['tokens_per_s_median']:8.0f} tokens/s median ({r['tokens_per_s_best']:.0f} best); "
                  f"trains {r['trainable']:,} of {r['params']:,}")
        print(f"  plugformer / HF+peft: {t['ratio_median']:.2f}x median, {t['ratio_best']:.2f}x best")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
