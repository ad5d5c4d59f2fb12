#!/usr/bin/env python
"""Training throughput: plugformer vs HF transformers GPT-2 (vs a plain-PyTorch GPT), same dims.

One training step = forward + cross-entropy + backward + AdamW step + zero_grad, on random token
batches. The contenders are measured in alternating rounds (A, B, C, then C, B, A, ...) and the
median step time is reported, so machine noise hits every contender alike.

plugformer is built through its public path, exactly what ``plugformer train`` builds:
``prepare()`` + ``compose_checked("train", overrides)`` → ``build_model`` → ``build("optimizer")``
and ``build("objective")``. The other contenders get an AdamW with the same hyper-parameters,
parameter groups and fused/foreach choice, read back from plugformer's optimizer.

    python benchmarks/train_throughput.py --steps 10 --warmup 2            # fp32 (bf16 only if fast)
    python benchmarks/train_throughput.py --precisions fp32,bf16           # force bf16
    python benchmarks/train_throughput.py --device cuda --steps 50 --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: the issue's targets: plugformer tokens/s ÷ HF GPT-2 tokens/s
TARGETS = {"fp32": 1.5, "bf16": 2.4}


# -- plain PyTorch GPT (nanoGPT-equivalent), the "what plain PyTorch reaches" reference ----------
class PlainBlock(nn.Module):
    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, seq: int, n_layers: int, d: int, n_heads: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(PlainBlock(d, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: Tensor) -> Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# -- contenders -----------------------------------------------------------------------------------
@dataclass
class Contender:
    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: Callable[[Tensor], Tensor]  # tokens (B, T+1) -> scalar loss
    notes: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    first_loss: float = float("nan")
    last_loss: float = float("nan")

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())  # tied weights counted once


def causal_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """The same loss as plugformer's clm objective: mean CE of logits (in fp32) against next tokens."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def like_optimizer(ref: torch.optim.Optimizer, model: nn.Module) -> torch.optim.Optimizer:
    """torch.optim.AdamW with ``ref``'s hyper-parameters, parameter-group policy and fused/foreach choice."""
    from plugformer.interfaces import param_groups

    d = ref.defaults
    wd = max(g["weight_decay"] for g in ref.param_groups)
    return torch.optim.AdamW(param_groups(model, wd), lr=d["lr"], betas=d["betas"], eps=d["eps"],
                             fused=d.get("fused"), foreach=d.get("foreach"))


def describe_optimizer(opt: torch.optim.Optimizer) -> str:
    d = opt.defaults
    wds = "/".join(f"{g['weight_decay']:g}" for g in opt.param_groups)
    impl = "fused" if d.get("fused") else ("foreach" if d.get("foreach") else "default(foreach if supported)")
    return (f"{type(opt).__name__}(lr={d['lr']:g}, betas={tuple(d['betas'])}, eps={d['eps']:g}, "
            f"weight_decay groups={wds}, impl={impl})")


def build_plugformer(args: argparse.Namespace, device: torch.device) -> Contender:
    from plugformer.build import build
    from plugformer.config import compose_checked, prepare
    from plugformer.model import build_model

    host = prepare()
    overrides = ["attention=sdpa", "position=learned", "norm=layernorm", "mlp=gelu", "optimizer=adamw",
                 "objective=clm", f"model.n_layers={args.layers}", f"model.d_model={args.d_model}",
                 f"model.n_heads={args.heads}", f"data.seq_len={args.seq}", "model.dropout=0",
                 *args.override]
    cfg = compose_checked("train", overrides, host)
    torch.manual_seed(args.seed)
    model = build_model(cfg, host.registries, vocab_size=args.vocab).to(device)
    optimizer = build(host.registries, "optimizer", cfg.optimizer, model)
    objective = build(host.registries, "objective", cfg.objective, None)
    c = Contender("plugformer", model, optimizer, lambda tokens: objective(model, tokens).loss)
    c.notes.append("overrides: " + " ".join(overrides))
    approximate = cfg.mlp.get("approximate")
    c.notes.append(f"mlp gelu approximate={getattr(approximate, 'value', approximate)}, bias={cfg.model.bias}, "
                   f"tie_embeddings={cfg.model.tie_embeddings}")
    return c


def build_hf(args: argparse.Namespace, device: torch.device, ref_opt: torch.optim.Optimizer) -> Contender:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(n_layer=args.layers, n_embd=args.d_model, n_head=args.heads, n_positions=args.seq,
                        vocab_size=args.vocab, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        activation_function=args.hf_activation, tie_word_embeddings=True)
    torch.manual_seed(args.seed)
    try:
        model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    except Exception as exc:  # an old transformers without SDPA for GPT-2
        print(f"note: HF sdpa attention unavailable ({exc}); using eager", file=sys.stderr)
        model = GPT2LMHeadModel._from_config(config, attn_implementation="eager")
    model.to(device)
    model.config.use_cache = False
    optimizer = like_optimizer(ref_opt, model)

    def loss_fn(tokens: Tensor) -> Tensor:
        return causal_ce(model(input_ids=tokens[:, :-1], use_cache=False).logits, tokens[:, 1:])

    c = Contender("HF GPT2", model, optimizer, loss_fn)
    c.notes.append(f"attn_implementation={model.config._attn_implementation}, "
                   f"activation={config.activation_function}, tied lm_head")
    return c


def build_plain(args: argparse.Namespace, device: torch.device, ref_opt: torch.optim.Optimizer) -> Contender:
    torch.manual_seed(args.seed)
    model = PlainGPT(args.vocab, args.seq, args.layers, args.d_model, args.heads).to(device)
    optimizer = like_optimizer(ref_opt, model)
    c = Contender("plain PyTorch", model, optimizer,
                  lambda tokens: causal_ce(model(tokens[:, :-1]), tokens[:, 1:]))
    c.notes.append("nanoGPT-style: fused qkv, F.scaled_dot_product_attention(is_causal), gelu tanh, tied")
    return c


# -- measuring ------------------------------------------------------------------------------------
def autocast_ctx(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(c: Contender, tokens: Tensor, device: torch.device, precision: str, grad_clip: float) -> Tensor:
    c.model.train()
    with autocast_ctx(device, precision):
        loss = c.loss_fn(tokens)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(c.model.parameters(), grad_clip)
    c.optimizer.step()
    c.optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def n_rounds(args: argparse.Namespace) -> int:
    return max(1, min(args.rounds, args.steps)) if args.rounds > 0 else max(1, args.steps)


def measure(contenders: list[Contender], batches: list[Tensor], args: argparse.Namespace,
            device: torch.device, precision: str) -> None:
    for c in contenders:  # warmup (the first step's loss is the sanity check)
        for i in range(args.warmup):
            loss = train_step(c, batches[i % len(batches)], device, precision, args.grad_clip)
            if i == 0:
                c.first_loss = loss.item()
        sync(device)
    rounds = n_rounds(args)
    per_round = [args.steps // rounds + (r < args.steps % rounds) for r in range(rounds)]
    step = 0
    for r, n in enumerate(per_round):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for c in order:
            for i in range(n):
                tokens = batches[(step + i) % len(batches)]
                sync(device)
                t0 = time.perf_counter()
                loss = train_step(c, tokens, device, precision, args.grad_clip)
                sync(device)
                c.times.append(time.perf_counter() - t0)
            c.last_loss = loss.item()
        print(f"  [{precision}] round {r + 1}/{rounds}: " + ", ".join(
            f"{c.name} {c.times[-1] * 1e3:.0f}" for c in contenders) + " ms (last step)", flush=True)
        step += n


def bf16_fast(device: torch.device) -> tuple[bool, str]:
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "CUDA device supports bf16" if ok else "this CUDA device does not support bf16"
    cap = torch.backends.cpu.get_cpu_capability()
    flags = set()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    hw = sorted(flags & {"amx_bf16", "avx512_bf16"})
    if "AVX512" in cap and hw:
        return True, f"CPU capability {cap}, {'/'.join(hw)}"
    return False, (f"CPU capability {cap}, no amx_bf16/avx512_bf16 in /proc/cpuinfo: "
                   "bf16 matmuls are emulated here and far slower than fp32; force with --precisions fp32,bf16")


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per contender and precision")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per contender and precision")
    p.add_argument("--rounds", type=int, default=0,
                   help="split the timed steps into this many rounds, each running every contender in turn, the "
                        "order reversed every other round (0: one step per contender per round)")
    p.add_argument("--precisions", default=None,
                   help="comma list of fp32,bf16 (default: fp32, plus bf16 where it is fast: CUDA or AMX/AVX512-BF16)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad-clip", type=float, default=0.0,
                   help="clip_grad_norm_ on every contender (plugformer's trainer clips at 1.0 by default)")
    p.add_argument("--hf-activation", default="gelu_new",
                   help="GPT2Config.activation_function (gelu_new is GPT-2's; gelu_pytorch_tanh is the fused op)")
    p.add_argument("--no-plain", action="store_true", help="skip the plain-PyTorch reference")
    p.add_argument("--override", action="append", default=[], help="extra plugformer train override (repeatable)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)

    fast, why = bf16_fast(device)
    if args.precisions is None:
        precisions = ["fp32", "bf16"] if fast else ["fp32"]
        if not fast:
            print(f"note: bf16 skipped: {why}")
    else:
        precisions = [x.strip() for x in args.precisions.split(",") if x.strip()]
        bad = [x for x in precisions if x not in ("fp32", "bf16")]
        if bad:
            p.error(f"unknown precision(s): {bad}")
        if "bf16" in precisions and not fast:
            print(f"warning: bf16 forced although it is slow here: {why}")

    tokens_per_step = args.batch * args.seq
    print("=" * 88)
    print("plugformer training-throughput benchmark")
    print(f"dims: layers={args.layers} d_model={args.d_model} heads={args.heads} T={args.seq} B={args.batch} "
          f"vocab={args.vocab}  ({tokens_per_step} tokens/step)")
    print(f"torch {torch.__version__}, python {platform.python_version()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
             f" ({cpu_name()}, capability {torch.backends.cpu.get_cpu_capability()})"))
    print(f"threads: {torch.get_num_threads()} (os.cpu_count={os.cpu_count()}), precisions: {','.join(precisions)}, "
          f"warmup {args.warmup}, timed {args.steps} steps in {n_rounds(args)} alternating rounds, "
          f"grad_clip={args.grad_clip or 'off'}")
    if device.type == "cuda":
        print(f"TF32 matmul: {torch.backends.cuda.matmul.allow_tf32}, cudnn: {torch.backends.cudnn.allow_tf32}")
    try:
        import transformers
        print(f"transformers {transformers.__version__}")
    except ImportError:
        print("transformers not installed: HF column skipped")
        transformers = None

    gen = torch.Generator().manual_seed(args.seed)
    n_batches = min(8, args.warmup + args.steps) or 1
    batches = [torch.randint(0, args.vocab, (args.batch, args.seq + 1), generator=gen).to(device)
               for _ in range(n_batches)]

    results: dict[str, Any] = {
        "dims": {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "seq": args.seq,
                 "batch": args.batch, "vocab": args.vocab},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
        "cpu": cpu_name(), "precisions": {}, "targets": TARGETS,
    }
    for precision in precisions:
        print("-" * 88)
        print(f"precision {precision}" + (" (torch.autocast bf16)" if precision == "bf16" else ""))
        pf = build_plugformer(args, device)
        contenders = [pf]
        if transformers is not None:
            contenders.append(build_hf(args, device, pf.optimizer))
        if not args.no_plain:
            contenders.append(build_plain(args, device, pf.optimizer))
        for c in contenders:
            print(f"  {c.name:<14} params {c.n_params:>11,}  optimizer {describe_optimizer(c.optimizer)}")
            for n in c.notes:
                print(f"  {'':<14} {n}")
        measure(contenders, batches, args, device, precision)
        entry: dict[str, Any] = {}
        for c in contenders:
            med = statistics.median(c.times)
            entry[c.name] = {"tokens_per_s": tokens_per_step / med, "ms_per_step": med * 1e3,
                             "tokens_per_s_best": tokens_per_step / min(c.times),
                             "ms_min": min(c.times) * 1e3, "ms_max": max(c.times) * 1e3, "steps": len(c.times),
                             "params": c.n_params, "first_loss": c.first_loss, "last_loss": c.last_loss,
                             "optimizer": describe_optimizer(c.optimizer), "notes": c.notes}
        results["precisions"][precision] = entry
        del contenders, pf
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # -- report ---------------------------------------------------------------------------------
    print("=" * 88)
    print("tokens/s and ms/step are medians over the timed steps; 'best' is the fastest step (less sensitive "
          "to other load on the machine)")
    print(f"{'precision':<9} {'contender':<14} {'tokens/s':>10} {'best':>8} {'ms/step':>9} {'min-max ms':>17} "
          f"{'params':>11} {'loss@1':>7} {'loss@end':>8}")
    ln_v = math.log(args.vocab)
    sanity_ok = True
    for precision, entry in results["precisions"].items():
        for name, r in entry.items():
            print(f"{precision:<9} {name:<14} {r['tokens_per_s']:>10,.0f} {r['tokens_per_s_best']:>8,.0f} "
                  f"{r['ms_per_step']:>9.1f} "
                  f"{r['ms_min']:>8.1f}-{r['ms_max']:<8.1f} {r['params']:>11,} {r['first_loss']:>7.3f} "
                  f"{r['last_loss']:>8.3f}")
            sanity_ok &= abs(r["first_loss"] - ln_v) < 0.5
        params = [r["params"] for r in entry.values()]
        sanity_ok &= (max(params) - min(params)) / max(params) < 0.01
    print(f"sanity: first-step losses vs ln({args.vocab})={ln_v:.3f} and parameter counts within 1%: "
          f"{'OK' if sanity_ok else 'MISMATCH'}")
    results["sanity_ok"] = sanity_ok
    print()
    results["ratios"] = {}
    for precision, entry in results["precisions"].items():
        pf = entry["plugformer"]["tokens_per_s"]
        ratios = {}
        line = f"{precision:<5}"
        if "HF GPT2" in entry:
            ratio = pf / entry["HF GPT2"]["tokens_per_s"]
            target = TARGETS.get(precision)
            met = ratio >= target if target else None
            ratios["plugformer/HF"] = ratio
            ratios["target"] = target
            ratios["target_met"] = met
            ratios["plugformer/HF_best"] = (entry["plugformer"]["tokens_per_s_best"]
                                            / entry["HF GPT2"]["tokens_per_s_best"])
            line += (f"  plugformer / HF = {ratio:.2f}x (best-step {ratios['plugformer/HF_best']:.2f}x; "
                     f"target >= {target}x: {'MET' if met else 'NOT met'})")
        if "plain PyTorch" in entry:
            ratios["plugformer/plain"] = pf / entry["plain PyTorch"]["tokens_per_s"]
            line += f"  plugformer / plain PyTorch = {ratios['plugformer/plain']:.2f}x"
            if "HF GPT2" in entry:
                ratios["plain/HF"] = entry["plain PyTorch"]["tokens_per_s"] / entry["HF GPT2"]["tokens_per_s"]
                line += f"  plain / HF = {ratios['plain/HF']:.2f}x"
        results["ratios"][precision] = ratios
        print(line)
    for precision in TARGETS:
        if precision not in results["precisions"]:
            print(f"{precision:<5}  not measured (target >= {TARGETS[precision]}x unverified)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
