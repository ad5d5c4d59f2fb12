#!/usr/bin/env python
"""Quantization quality: weight bytes, validation perplexity and generation speed of each quantizer vs
fp32, on one model, in one run; plus the LoRA trainable-parameter share of the same model.

The model is trained here with ``plugformer train``'s own code path (byte tokenizer, the embedded default
``stdlib`` corpus), or taken from ``--checkpoint``. Each variant is the fp32 checkpoint loaded through
``plugformer.checkpoint.load_model_for_inference`` and quantized by the registry's quantizer, exactly what
``plugformer quantize`` writes. Perplexity uses the same fixed validation windows for every variant;
generation is greedy KV-cached decoding (``plugformer.generation.Generator``), variants timed in turns.

Bytes are reported twice: "linear" counts only the quantized Linear weights (plus their scales/quant
state) against their fp32 bytes; "model" counts every tensor the quantized checkpoint stores (embedding,
norms and biases stay full precision) against the fp32 checkpoint.

    python benchmarks/quantize_quality.py                           # train (~2 min on 2 free cores), measure
    python benchmarks/quantize_quality.py --run-dir runs/qbench     # keep it: --checkpoint runs/qbench/checkpoints/last
    python benchmarks/quantize_quality.py --checkpoint runs/x/checkpoints/last --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

#: the issue's targets: (max bytes ratio of the linear weights, max perplexity increase)
TARGETS = {"int8": (0.30, 0.01), "nf4": (0.18, 0.05)}
VARIANTS = ("fp32", "bf16", "int8", "int8_dynamic", "nf4")


def train_overrides(args: argparse.Namespace, run_dir: Path) -> list[str]:
    return ["tokenizer=byte", f"model.n_layers={args.layers}", f"model.d_model={args.d_model}",
            f"model.n_heads={args.heads}", f"data.seq_len={args.seq_len}", f"trainer.batch_size={args.batch}",
            f"trainer.max_steps={args.steps}", "trainer.eval_every=0", "trainer.save_every=0",
            f"trainer.eval_batches={args.eval_batches}", "trainer.callbacks=[metrics]", "optimizer.lr=2e-3",
            "scheduler=cosine", "scheduler.warmup_steps=20", "model.dropout=0.0",
            f"threads={args.threads}", "seed=0", f"hydra.run.dir={run_dir}"]


def train(args: argparse.Namespace, host: Any, run_dir: Path) -> Path:
    from plugformer.config import compose_checked
    from plugformer.training import run_training

    overrides = train_overrides(args, run_dir)
    cfg = compose_checked("train", [o for o in overrides if not o.startswith("hydra.")], host)
    started = time.perf_counter()
    summary = run_training(cfg, run_dir, host)
    print(f"trained {summary['params']:,} parameters for {summary['step']} steps in "
          f"{time.perf_counter() - started:.0f}s: val perplexity {summary['val_perplexity']:.3f}", flush=True)
    return run_dir / "checkpoints" / "last"


def val_windows(checkpoint: Path, host: Any, args: argparse.Namespace) -> list[torch.Tensor]:
    """The fixed validation windows of the checkpoint's config (as the trainer evaluates them)."""
    from omegaconf import OmegaConf
    from plugformer.build import build
    from plugformer.training.data import TrainingData

    cfg = OmegaConf.load(checkpoint / "config.yaml")
    cfg.trainer.eval_batches = args.eval_batches
    strategy = build(host.registries, "parallel", {"name": "single"})
    data = TrainingData(cfg, host.registries, strategy, checkpoint)
    return list(data.val_batches(cfg.trainer.batch_size))


@torch.no_grad()
def perplexity(model: torch.nn.Module, windows: list[torch.Tensor]) -> float:
    total, count = 0.0, 0
    for w in windows:
        logits = model(w[:, :-1]).float()
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
        count += w[:, 1:].numel()
    return math.exp(total / count)


def linear_keys(model: torch.nn.Module) -> dict[str, int]:
    """Quantizable Linear layers (not the tied head) → their fp32 weight bytes."""
    tied = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return {n: m.weight.numel() * 4 for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and id(m.weight) not in tied}


def byte_counts(tensors: dict[str, torch.Tensor], linears: dict[str, int]) -> tuple[int, int]:
    """(bytes of the Linear weights with their scales / quant state, bytes of everything)."""
    from plugformer.checkpoint import tensor_bytes

    def is_linear_weight(key: str) -> bool:
        return any(key == f"{n}.weight" or key.startswith((f"{n}.weight.", f"{n}._weight_")) for n in linears)

    return tensor_bytes({k: v for k, v in tensors.items() if is_linear_weight(k)}), tensor_bytes(tensors)


def load_variant(name: str, checkpoint: Path, host: Any) -> tuple[torch.nn.Module, Any, dict[str, torch.Tensor]]:
    from plugformer.build import build
    from plugformer.checkpoint import load_model_for_inference

    loaded = load_model_for_inference(checkpoint, host.registries, device="cpu")
    quantizer = build(host.registries, "quantizer", {"name": "none" if name == "fp32" else name})
    model = quantizer.apply(loaded.model).eval()
    tensors, _ = quantizer.quantized_state(model)
    return model, loaded.tokenizer, tensors


def generation_speed(models: dict[str, Any], tokenizer: Any, args: argparse.Namespace) -> dict[str, float]:
    """Median tokens/s of greedy decoding per variant; variants take turns, order reversed every round."""
    from plugformer.generation import Generator, Sampling

    prompt = tokenizer.encode("def main(argv):\n    ")
    sampling = Sampling(max_new_tokens=args.gen_tokens, temperature=0.0)
    gens = {n: Generator(m, tokenizer, torch.device("cpu")) for n, m in models.items()}
    for g in gens.values():  # warm-up
        g.generate_ids(prompt, Sampling(max_new_tokens=4, temperature=0.0))
    times: dict[str, list[float]] = {n: [] for n in gens}
    order = list(gens)
    for r in range(args.gen_rounds):
        for n in order if r % 2 == 0 else order[::-1]:
            started = time.perf_counter()
            out = gens[n].generate_ids(prompt, sampling)
            times[n].append(max(len(out), 1) / (time.perf_counter() - started))
    return {n: statistics.median(v) for n, v in times.items()}


def lora_share(model: torch.nn.Module, host: Any) -> tuple[int, int]:
    """(trainable, total) parameters after the default ``lora`` adapter (r=8, attention + MLP)."""
    from plugformer.build import build

    adapted = build(host.registries, "adapter", {"name": "lora"}).apply(model)
    return (sum(p.numel() for p in adapted.parameters() if p.requires_grad),
            sum(p.numel() for p in adapted.parameters()))


def gpt2_small(host: Any) -> torch.nn.Module:
    """An untrained plugformer model of GPT-2 small's size (12 × 768, 12 heads, vocab 50257, T=1024)."""
    from plugformer.config import compose_checked
    from plugformer.model import build_model

    cfg = compose_checked("train", ["model.n_layers=12", "model.d_model=768", "model.n_heads=12",
                                    "data.seq_len=1024", "position=learned"], host)
    return build_model(cfg, host.registries, 50257)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="measure this checkpoint instead of training one")
    parser.add_argument("--run-dir", type=Path, help="keep the trained run here (default: a temporary directory)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-batches", type=int, default=6)
    parser.add_argument("--gen-tokens", type=int, default=48)
    parser.add_argument("--gen-rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from plugformer.config import prepare

    host = prepare()
    with tempfile.TemporaryDirectory(prefix="plugformer-quant-bench-") as tmp:
        checkpoint = args.checkpoint or train(args, host, args.run_dir or Path(tmp) / "run")
        windows = val_windows(checkpoint, host, args)
        rows: dict[str, dict[str, Any]] = {}
        models: dict[str, Any] = {}
        tokenizer = None
        for name in args.variants.split(","):
            entry = None if name == "fp32" else host.registries.quantizer.get(name)
            if entry is not None and not entry.availability()[0]:
                print(f"{name}: unavailable here: {entry.availability()[1]}")
                continue
            model, tokenizer, tensors = load_variant(name, checkpoint, host)
            linear, whole = byte_counts(tensors, linear_keys(load_variant("fp32", checkpoint, host)[0]))
            rows[name] = {"linear_bytes": linear, "model_bytes": whole, "perplexity": perplexity(model, windows)}
            models[name] = model
        speeds = generation_speed(models, tokenizer, args)
        from plugformer.checkpoint import load_model_for_inference

        shares = {"this model": lora_share(load_model_for_inference(checkpoint, host.registries, device="cpu").model,
                                           host),
                  "GPT-2 small size": lora_share(gpt2_small(host), host)}

    fp32 = rows["fp32"]
    print(f"\nvalidation: {sum(w[:, 1:].numel() for w in windows):,} tokens; generation: {args.gen_tokens} "
          f"greedy tokens, median of {args.gen_rounds} rounds; {args.threads} threads")
    print(f"{'variant':<13}{'linear bytes':>14}{'ratio':>8}{'model bytes':>13}{'ratio':>8}"
          f"{'perplexity':>12}{'Δ vs fp32':>11}{'gen tok/s':>11}{'× fp32':>8}  target")
    for name, r in rows.items():
        r["linear_ratio"] = r["linear_bytes"] / fp32["linear_bytes"]
        r["model_ratio"] = r["model_bytes"] / fp32["model_bytes"]
        r["perplexity_change"] = r["perplexity"] / fp32["perplexity"] - 1
        r["gen_tokens_per_s"] = speeds[name]
        r["gen_speed_ratio"] = speeds[name] / speeds["fp32"]
        target = ""
        if name in TARGETS:
            max_bytes, max_ppl = TARGETS[name]
            ok = r["linear_ratio"] <= max_bytes and r["perplexity_change"] <= max_ppl
            target = f"bytes ≤{max_bytes:.0%}, ppl +≤{max_ppl:.0%}: {'met' if ok else 'MISSED'}"
        print(f"{name:<13}{r['linear_bytes']:>14,}{r['linear_ratio']:>8.1%}{r['model_bytes']:>13,}"
              f"{r['model_ratio']:>8.1%}{r['perplexity']:>12.4f}{r['perplexity_change']:>+11.2%}"
              f"{speeds[name]:>11.1f}{r['gen_speed_ratio']:>8.2f}  {target}")
    for what, (trainable, total) in shares.items():
        share = trainable / total
        print(f"LoRA (r=8, attention + MLP Linear layers), {what}: {trainable:,} trainable of {total:,} "
              f"parameters = {share:.2%} (target ≤ 5%: {'met' if share <= 0.05 else 'MISSED'})")
    if args.json:
        args.json.write_text(json.dumps({"variants": rows, "lora": {k: {"trainable": t, "total": n}
                                                                    for k, (t, n) in shares.items()}},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
