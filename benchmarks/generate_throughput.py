#!/usr/bin/env python
"""Generation throughput: plugformer's inference engine vs HF transformers ``generate``, same tiny GPT-2.

One GPT-2 (6 layers, d_model 384, 6 heads, vocab 8192, context 512) is built here with transformers
from seeded random weights, saved as a Hugging Face directory next to a byte-level BPE
``tokenizer.json`` (fitted here on Python standard-library sources), and imported with plugformer's
``import-hf`` (``plugformer_hf.import_hf.import_hf``). Both sides then decode the same token ids in
fp32, greedily, never stopping at EOS:

(a) batch 1: one prompt, 128 new tokens: ``Engine.generate`` vs ``model.generate`` (sdpa, KV cache);
    plugformer's tokens must equal HF's;
(b) 64 prompts of 16-256 tokens, 128 new tokens each: ``Engine.generate(all prompts)`` vs HF
    ``generate`` in left-padded batches of 8 and of 64 (generated tokens / wall time);
(c) 32 requests sharing a 384-token prefix, submitted one after another: time to first token with
    the engine's prefix cache on vs off.

    python benchmarks/generate_throughput.py --quick             # a smoke run (smaller counts)
    python benchmarks/generate_throughput.py --threads 2         # the full run
    python benchmarks/generate_throughput.py --json out.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

#: the issue's targets: (a) and (b) plugformer tokens/s ÷ HF tokens/s, (c) TTFT without ÷ with the prefix cache
TARGETS = {"a": 1.5, "b": 2.0, "c": 5.0}
#: what every timing reads: wall time, or with ``--clock cpu`` this process's CPU time (steadier on a shared
#: machine, and equal to wall time on an idle one when each side runs one thread)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = [time.perf_counter]


def clock() -> float:
    return _clock[0]()
EOS = "<|endoftext|>"


@dataclass
class Settings:
    """The workload sizes; ``--quick`` shrinks them for a smoke run."""

    new_tokens: int = 128  # (a) and (b)
    single_prompt: int = 32  # (a) prompt length
    prompts: int = 64  # (b)
    min_len: int = 16
    max_len: int = 256
    hf_batches: tuple[int, ...] = (8, 64)
    requests: int = 32  # (c)
    prefix: int = 384
    tail: int = 8
    rounds_a: int = 3
    rounds_b: int = 1

    @classmethod
    def quick(cls) -> Settings:
        return cls(new_tokens=32, prompts=16, max_len=128, hf_batches=(8, 16), requests=8, rounds_a=1)


@dataclass
class Timing:
    """Wall times of one contender over its rounds."""

    name: str
    tokens: int  # generated per round
    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median

    def as_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "seconds": self.times, "median_s": self.median,
                "tokens_per_s": self.tokens_per_s}


# -- the model, on both sides -------------------------------------------------------------------------
def stdlib_texts(limit_chars: int) -> list[str]:
    """Python standard-library sources (sorted, so the fitted tokenizer is the same on every run)."""
    texts, n = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        n += len(text)
        if n >= limit_chars:
            break
    return texts


def fit_tokenizer(directory: Path, vocab: int) -> int:
    """Write a byte-level BPE ``tokenizer.json`` of exactly ``vocab`` ids (``<|endoftext|>`` = 0); its eos id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(stdlib_texts(1_000_000), trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    if tok.get_vocab_size() != vocab:
        raise SystemExit(f"the fitted tokenizer has {tok.get_vocab_size()} ids, not {vocab}: not enough "
                         "standard-library text to fit it")
    tok.save(str(directory / "tokenizer.json"))
    return tok.token_to_id(EOS)


def save_hf_model(directory: Path, args: argparse.Namespace) -> int:
    """The seeded random GPT-2 saved with ``save_pretrained`` next to its tokenizer; returns the eos id.

    Every parameter gets extra seeded noise (``--weight-noise``) on top of GPT-2's init: it spreads the
    logits, so greedy picks are clear-cut and the token-for-token comparison is meaningful."""
    from transformers import GPT2Config, GPT2LMHeadModel

    directory.mkdir(parents=True)
    eos = fit_tokenizer(directory, args.vocab)
    config = GPT2Config(n_layer=args.layers, n_embd=args.d_model, n_head=args.heads, n_positions=args.context,
                        vocab_size=args.vocab, bos_token_id=eos, eos_token_id=eos, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True)
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * args.weight_noise)
    model.save_pretrained(directory)
    return eos


def load_hf_model(directory: Path) -> Any:
    """The saved model as transformers loads it: sdpa attention, eval mode, no EOS stop (and so no EOS
    suppression by ``min_new_tokens``): it decodes exactly ``max_new_tokens`` like ``ignore_eos``."""
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(directory, attn_implementation="sdpa").eval()
    model.generation_config.eos_token_id = None
    return model


def engine_over(checkpoint: Path, **knobs: Any) -> Any:
    from plugformer.engine import Engine

    return Engine.from_checkpoint(checkpoint, device="cpu", **knobs)


class KVPeak:
    """Records the engine's KV-cache use after every step (the largest ``kv_bytes_used`` and blocks, the
    largest ``kv_decode_buffer_bytes`` of the dense decode buffers, and the largest sum of both)."""

    def __init__(self, engine: Any):
        self.bytes = self.blocks = self.buffer_bytes = self.total_bytes = 0
        self.total_blocks = engine.stats().kv_blocks_total
        self.bytes_per_token = engine.cache.bytes_per_token
        self.block_size = engine.pool.block_size
        step = engine.step

        def recording_step() -> Any:
            deltas = step()
            stats = engine.stats()
            self.bytes, self.blocks = max(self.bytes, stats.kv_bytes_used), max(self.blocks, stats.kv_blocks_used)
            buffers = getattr(stats, "kv_decode_buffer_bytes", 0)
            self.buffer_bytes = max(self.buffer_bytes, buffers)
            self.total_bytes = max(self.total_bytes, stats.kv_bytes_used + buffers)
            return deltas

        engine.step = recording_step  # Engine.generate and Engine.stream call self.step()


class ForwardClock:
    """Accumulates the wall time spent inside ``module.forward`` and the token positions it computed
    (padding included): the rest of a run is the generation loop's own bookkeeping (scheduling, cache
    tables, sampling, detokenizing)."""

    def __init__(self, module: Any):
        self.seconds, self.positions, self._started = 0.0, 0, 0.0
        module.register_forward_pre_hook(self._enter, with_kwargs=True)
        module.register_forward_hook(self._leave)  # hooks, not a wrapper: HF inspects forward's signature

    def _enter(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        self.positions += ids.numel() if isinstance(ids, torch.Tensor) else 0
        self._started = clock()

    def _leave(self, module: Any, args: Any, output: Any) -> None:
        self.seconds += clock() - self._started

    @classmethod
    def of(cls, module: Any) -> ForwardClock:
        """The clock on ``module`` (installed on first use)."""
        if "_bench_clock" not in module.__dict__:
            module.__dict__["_bench_clock"] = cls(module)
        return module.__dict__["_bench_clock"]

    def take(self) -> tuple[float, int]:
        """(seconds, positions) since the last take."""
        taken = self.seconds, self.positions
        self.seconds, self.positions = 0.0, 0
        return taken


# -- the workloads --------------------------------------------------------------------------------------
def random_ids(n: int, vocab: int, eos: int, gen: torch.Generator) -> list[int]:
    """``n`` seeded random token ids, never the eos id."""
    return [i + (i >= eos) for i in torch.randint(0, vocab - 1, (n,), generator=gen).tolist()]


def hf_generate(model: Any, prompts: list[list[int]], batch: int, new_tokens: int, pad: int) -> list[list[int]]:
    """HF ``generate`` over ``prompts`` in left-padded batches of ``batch``; the new tokens of each."""
    outs = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        width = max(len(p) for p in chunk)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, use_cache=True, pad_token_id=pad)
        outs += out[:, width:].tolist()
    if any(len(o) != new_tokens for o in outs):
        raise SystemExit(f"HF generate returned {sorted({len(o) for o in outs})} new tokens, not {new_tokens}")
    return outs


def engine_generate(engine: Any, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    from plugformer.engine import SamplingParams

    outs = engine.generate(prompts, SamplingParams(max_tokens=new_tokens, temperature=0, ignore_eos=True))
    return [o.outputs[0].token_ids for o in outs]


def timed(fn: Any, *a: Any) -> tuple[float, Any]:
    t0 = clock()
    result = fn(*a)
    return clock() - t0, result


def first_divergence(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else min(len(a), len(b)))


def bench_single(engine: Any, hf: Any, s: Settings, vocab: int, eos: int, seed: int) -> dict[str, Any]:
    """(a): one prompt at a time; a fresh prompt every round (so no round reuses the prefix cache)."""
    pf, ref = Timing("plugformer Engine", s.new_tokens), Timing("HF generate", s.new_tokens)
    warm = random_ids(s.single_prompt, vocab, eos, torch.Generator().manual_seed(seed + 999))
    engine_generate(engine, [warm], 8)
    hf_generate(hf, [warm], 1, 8, eos)
    clocks = {pf.name: ForwardClock.of(engine.model), ref.name: ForwardClock.of(hf)}
    in_forward: dict[str, list[float]] = {pf.name: [], ref.name: []}
    match = None
    for r in range(s.rounds_a):
        prompt = random_ids(s.single_prompt, vocab, eos, torch.Generator().manual_seed(seed + r))
        order = [(pf, lambda prompt=prompt: engine_generate(engine, [prompt], s.new_tokens)),
                 (ref, lambda prompt=prompt: hf_generate(hf, [prompt], 1, s.new_tokens, eos))]
        outs = {}
        for t, run in (order if r % 2 == 0 else order[::-1]):
            clocks[t.name].take()
            seconds, out = timed(run)
            t.times.append(seconds)
            in_forward[t.name].append(clocks[t.name].take()[0])
            outs[t.name] = out[0]
        if match is None:
            match = (outs[pf.name], outs[ref.name])
        print(f"  (a) round {r + 1}/{s.rounds_a}: plugformer {pf.times[-1]:.2f} s, HF {ref.times[-1]:.2f} s",
              flush=True)
    ours, theirs = match
    at = first_divergence(ours, theirs)
    split = {name: {"forward_ms_per_token": statistics.median(f) * 1e3 / s.new_tokens,
                    "rest_ms_per_token": statistics.median(t - x for t, x in zip(timing.times, f)) * 1e3 / s.new_tokens}
             for name, f, timing in ((pf.name, in_forward[pf.name], pf), (ref.name, in_forward[ref.name], ref))}
    return {"plugformer": {**pf.as_dict(), **split[pf.name]}, "hf": {**ref.as_dict(), **split[ref.name]},
            "ratio": pf.tokens_per_s / ref.tokens_per_s, "tokens_equal": at is None, "first_divergence": at}


def bench_batch(engine: Any, hf: Any, s: Settings, vocab: int, eos: int, seed: int) -> dict[str, Any]:
    """(b): many prompts of mixed lengths; the engine takes them all at once, HF in padded batches."""
    lengths = torch.randint(s.min_len, s.max_len + 1, (s.prompts,),
                            generator=torch.Generator().manual_seed(seed + 100)).tolist()

    def prompt_set(r: int) -> list[list[int]]:
        """The prompts of round ``r``: the same lengths every round, fresh ids (no prefix-cache reuse)."""
        gen = torch.Generator().manual_seed(seed + 101 + r)
        return [random_ids(n, vocab, eos, gen) for n in lengths]

    total = s.prompts * s.new_tokens
    pf = Timing("plugformer Engine", total)
    hfs = [Timing(f"HF generate, batches of {b}", total) for b in s.hf_batches]
    warm = prompt_set(-1)[:2]
    engine_generate(engine, warm, 4)
    hf_generate(hf, warm, 2, 4, eos)
    peak = KVPeak(engine)
    clocks = {pf.name: ForwardClock.of(engine.model), **{t.name: ForwardClock.of(hf) for t in hfs}}
    outs: dict[str, list[list[int]]] = {}
    forward: dict[str, list[float]] = {t.name: [] for t in (pf, *hfs)}
    positions: dict[str, int] = {}
    for r in range(s.rounds_b):
        prompts = prompt_set(r)
        runs = [(pf, lambda prompts=prompts: engine_generate(engine, prompts, s.new_tokens))]
        runs += [(t, lambda b=b, prompts=prompts: hf_generate(hf, prompts, b, s.new_tokens, eos))
                 for t, b in zip(hfs, s.hf_batches)]
        for t, run in (runs if r % 2 == 0 else runs[::-1]):
            clocks[t.name].take()
            seconds, out = timed(run)
            t.times.append(seconds)
            in_forward, positions[t.name] = clocks[t.name].take()
            forward[t.name].append(in_forward)
            outs.setdefault(t.name, out)
            print(f"  (b) round {r + 1}/{s.rounds_b}: {t.name}: {seconds:.1f} s ({total / seconds:,.0f} tokens/s)",
                  flush=True)
    best = max(hfs, key=lambda t: t.tokens_per_s)
    equal = {t.name: sum(a == b for a, b in zip(outs[pf.name], outs[t.name])) for t in hfs}
    per_token = peak.bytes_per_token
    hf_kv = {t.name: max(len(chunk) * (max(lengths[i] for i in chunk) + s.new_tokens) * per_token
                         for chunk in (range(i, min(i + b, s.prompts)) for i in range(0, s.prompts, b)))
             for t, b in zip(hfs, s.hf_batches)}
    detail = {t.name: {**t.as_dict(), "forward_share": statistics.median(forward[t.name]) / t.median,
                       "positions_computed": positions[t.name]} for t in (pf, *hfs)}
    return {"prompt_lengths": {"min": min(lengths), "max": max(lengths), "mean": statistics.mean(lengths),
                               "total": sum(lengths)},
            "plugformer": detail[pf.name], "hf": {t.name: detail[t.name] for t in hfs}, "hf_best": best.name,
            "ratio": pf.tokens_per_s / best.tokens_per_s, "outputs_equal_to_hf": equal,
            "kv_peak_bytes": peak.bytes, "kv_peak_blocks": peak.blocks,
            "kv_decode_buffers_peak_bytes": peak.buffer_bytes, "kv_peak_bytes_with_buffers": peak.total_bytes,
            "kv_blocks_total": peak.total_blocks,
            "kv_block_size": peak.block_size, "kv_bytes_per_token": per_token,
            "kv_bytes_if_max_batch_x_context": s.prompts * engine.context * per_token,
            "hf_kv_bytes_largest_batch": hf_kv}


def bench_prefix(checkpoint: Path, s: Settings, vocab: int, eos: int, seed: int) -> dict[str, Any]:
    """(c): requests sharing a long prefix, one after another (each waits for its first token), with the
    prefix cache on and off; a warm-up request fills the cache first."""
    from plugformer.engine import SamplingParams

    gen = torch.Generator().manual_seed(seed + 200)
    prefix = random_ids(s.prefix, vocab, eos, gen)
    tails = [random_ids(s.tail, vocab, eos, gen) for _ in range(s.requests + 1)]
    engines = {"on": engine_over(checkpoint, prefix_caching=True), "off": engine_over(checkpoint, prefix_caching=False)}
    params = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)

    def first_token(engine: Any, prompt: list[int]) -> float:
        t0 = clock()
        stream = engine.stream(prompt, params)
        try:
            for delta in stream:
                if delta.token_ids:
                    return clock() - t0
        finally:
            stream.close()
        raise SystemExit("the engine finished a request without a token")

    for engine in engines.values():
        first_token(engine, prefix + tails[-1])  # warm-up: fills the prefix cache of the "on" engine
    ttft: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(s.requests):
        for name in (("on", "off") if i % 2 == 0 else ("off", "on")):
            ttft[name].append(first_token(engines[name], prefix + tails[i]))
    hit = engines["on"].stats().prefix_hit_rate
    summary = {name: {"mean_s": statistics.mean(t), "p50_s": statistics.median(t), "min_s": min(t), "max_s": max(t)}
               for name, t in ttft.items()}
    return {**summary, "ratio_mean": summary["off"]["mean_s"] / summary["on"]["mean_s"],
            "ratio_p50": summary["off"]["p50_s"] / summary["on"]["p50_s"], "prefix_hit_rate": hit,
            "prompt_tokens": s.prefix + s.tail, "requests": s.requests}


# -- profiling ------------------------------------------------------------------------------------------
def profile_engine(engine: Any, s: Settings, vocab: int, eos: int, seed: int, top: int) -> None:
    """Where the engine's time goes on workload (b): cProfile by own time, then torch.profiler by operator."""
    import cProfile
    import pstats

    gen = torch.Generator().manual_seed(seed + 300)
    lengths = torch.randint(s.min_len, s.max_len + 1, (s.prompts,), generator=gen).tolist()
    prompts = [random_ids(n, vocab, eos, gen) for n in lengths]
    print("=" * 100)
    print(f"profile: Engine.generate on {s.prompts} prompts x {s.new_tokens} new tokens (cProfile, own time)")
    prof = cProfile.Profile()
    prof.runcall(engine_generate, engine, prompts, s.new_tokens)
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)
    print("profile: the same under torch.profiler (CPU operators by self time)")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tp:
        engine_generate(engine, prompts, s.new_tokens)
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


# -- report ---------------------------------------------------------------------------------------------
def cpu_name() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x (target >= {target}x: {'MET' if ratio >= target else 'NOT met'})"


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def report(res: dict[str, Any], s: Settings) -> None:
    print("=" * 100)
    a, b, c = res.get("a"), res.get("b"), res.get("c")
    if a:
        print(f"(a) batch 1, {a['plugformer']['tokens']} new tokens (median of {len(a['hf']['seconds'])} rounds)")
        for label, key in (("plugformer Engine", "plugformer"), ("HF generate", "hf")):
            t = a[key]
            print(f"    {label:<17} {t['tokens_per_s']:>9,.1f} tokens/s  ({1e3 / t['tokens_per_s']:.2f} ms/token: "
                  f"{t['forward_ms_per_token']:.2f} in model.forward, {t['rest_ms_per_token']:.2f} around it)")
        same = "yes" if a["tokens_equal"] else f"NO (first difference at token {a['first_divergence']})"
        print(f"    greedy tokens equal to HF's: {same}")
        print(f"    plugformer / HF = {verdict(a['ratio'], TARGETS['a'])}")
    if b:
        lens = b["prompt_lengths"]
        print(f"(b) {s.prompts} prompts of {lens['min']}-{lens['max']} tokens (mean {lens['mean']:.0f}), "
              f"{s.new_tokens} new tokens each ({b['plugformer']['tokens']:,} generated)")
        least = lens["total"] + s.prompts * (s.new_tokens - 1)
        print(f"    (positions: token positions the model computed, padding included; {least:,} without padding)")
        for name, t in (("plugformer Engine", b["plugformer"]), *b["hf"].items()):
            same = "" if t is b["plugformer"] else \
                f"; outputs equal to plugformer's: {b['outputs_equal_to_hf'][name]}/{s.prompts}"
            print(f"    {name:<30} {t['tokens_per_s']:>9,.1f} tokens/s ({t['median_s']:.1f} s, "
                  f"{t['forward_share']:.0%} in model.forward, {t['positions_computed']:,} positions){same}")
        print(f"    plugformer / HF's best ({b['hf_best']}) = {verdict(b['ratio'], TARGETS['b'])}")
        print(f"    KV cache held by the engine at peak: {mib(b['kv_peak_bytes'])} in {b['kv_peak_blocks']} of "
              f"{b['kv_blocks_total']} blocks of {b['kv_block_size']} tokens ({b['kv_bytes_per_token']:,} B/token); "
              f"{s.prompts} x context would be {mib(b['kv_bytes_if_max_batch_x_context'])}")
        print(f"    decode buffers (dense copies of the decoding rows) at peak: "
              f"{mib(b['kv_decode_buffers_peak_bytes'])}; pool + buffers at peak: "
              f"{mib(b['kv_peak_bytes_with_buffers'])}")
        for name, n in b["hf_kv_bytes_largest_batch"].items():
            print(f"    (HF's padded cache, computed, largest batch of '{name}': {mib(n)})")
    if c:
        print(f"(c) {c['requests']} requests of {c['prompt_tokens']} tokens sharing a {s.prefix}-token prefix, "
              "one after another: time to first token")
        for name in ("on", "off"):
            t = c[name]
            print(f"    prefix cache {name:<3}  mean {t['mean_s'] * 1e3:7.1f} ms  p50 {t['p50_s'] * 1e3:7.1f} ms  "
                  f"(min {t['min_s'] * 1e3:.1f}, max {t['max_s'] * 1e3:.1f})")
        print(f"    prefix-cache hit rate {c['prefix_hit_rate']:.0%}; TTFT off / on: mean "
              f"{verdict(c['ratio_mean'], TARGETS['c'])}, p50 {c['ratio_p50']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller counts for a smoke run (not the issue's figures)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="time with the wall clock or with this process's CPU time (a loaded, shared machine: use "
                        "cpu with --threads 1)")
    p.add_argument("--parts", default="a,b,c", help="which of the workloads a,b,c to run")
    p.add_argument("--rounds", type=int, default=None,
                   help="timed rounds of (b) (default 1; (a) runs 3, alternating which side goes first)")
    p.add_argument("--max-prefill-tokens", type=int, default=512, help="the engine's prompt tokens per step")
    p.add_argument("--kv-cache-tokens", type=int, default=None, help="the engine's KV pool (default: the engine's)")
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--weight-noise", type=float, default=0.1,
                   help="std of the seeded noise added to every weight (spreads the logits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true",
                   help="afterwards, profile the engine on workload (b) (cProfile and torch.profiler)")
    p.add_argument("--top", type=int, default=25, help="rows of each profile table")
    p.add_argument("--workdir", default=None, help="keep the HF directory and the imported checkpoint here")
    p.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    args = p.parse_args(argv)
    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if not parts or parts - {"a", "b", "c"}:
        p.error(f"--parts {args.parts!r}: choose from a, b, c")
    for name in ("threads", "rounds", "max_prefill_tokens", "kv_cache_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    _clock[0] = CLOCKS[args.clock]
    s = Settings.quick() if args.quick else Settings()
    if args.rounds:
        s.rounds_b = args.rounds
    if args.workdir and Path(args.workdir).exists() and any(Path(args.workdir).iterdir()):
        p.error(f"--workdir {args.workdir} is not empty (the benchmark writes hf/ and plugformer/ into it)")
    if s.prefix + s.tail + 1 > args.context or s.max_len + s.new_tokens > args.context:
        p.error(f"--context {args.context} is too short for the workloads")

    import transformers

    from plugformer_hf.import_hf import import_hf

    print("=" * 100)
    print("plugformer generation benchmark" + (" (--quick: smaller counts, not the issue's figures)" if args.quick
                                               else ""))
    print(f"model: GPT-2, layers={args.layers} d_model={args.d_model} heads={args.heads} vocab={args.vocab} "
          f"context={args.context}, seeded random weights (seed {args.seed}, noise {args.weight_noise}), fp32")
    print(f"CPU: {cpu_name()} (capability {torch.backends.cpu.get_cpu_capability()}, os.cpu_count={os.cpu_count()}); "
          f"torch {torch.__version__} threads {torch.get_num_threads()}; transformers {transformers.__version__}; "
          f"python {platform.python_version()}; timed by {args.clock} clock")

    with contextlib.ExitStack() as stack:
        root = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        t0 = time.perf_counter()
        eos = save_hf_model(root / "hf", args)
        imported = import_hf(root / "hf", root / "plugformer")
        print(f"HF directory {root / 'hf'} imported with import-hf into {imported.out} "
              f"({imported.n_params:,} parameters, components {imported.components}) in "
              f"{time.perf_counter() - t0:.1f} s")
        hf = load_hf_model(root / "hf")
        engine = engine_over(imported.out, max_batch=max(64, s.prompts), max_prefill_tokens=args.max_prefill_tokens,
                             kv_cache_tokens=args.kv_cache_tokens)
        print(f"HF: attn_implementation={hf.config._attn_implementation}; "
              f"engine: max_batch={engine.scheduler.max_batch} "
              f"max_prefill_tokens={args.max_prefill_tokens} block_size={engine.pool.block_size} "
              f"kv pool {engine.pool.capacity * engine.pool.block_size:,} tokens")
        print("-" * 100, flush=True)
        results: dict[str, Any] = {
            "cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "transformers": transformers.__version__, "quick": args.quick, "targets": TARGETS,
            "model": {"layers": args.layers, "d_model": args.d_model, "heads": args.heads, "vocab": args.vocab,
                      "context": args.context, "params": imported.n_params}}
        if "a" in parts:
            results["a"] = bench_single(engine, hf, s, args.vocab, eos, args.seed)
        if "b" in parts:
            results["b"] = bench_batch(engine, hf, s, args.vocab, eos, args.seed)
        if "c" in parts:
            results["c"] = bench_prefix(imported.out, s, args.vocab, eos, args.seed)
        report(results, s)
        if args.profile:
            profile_engine(engine_over(imported.out, max_batch=max(64, s.prompts),
                                       max_prefill_tokens=args.max_prefill_tokens,
                                       kv_cache_tokens=args.kv_cache_tokens), s, args.vocab, eos, args.seed, args.top)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
