"""``plugformer generate``: one prompt printed to the terminal, or a file of prompts written as JSON
lines, through the inference engine (batched, with speculative decoding when ``draft=`` is given).

A model whose attention or position plugin predates ragged batches (plugin API 1.0) still generates:
one sequence at a time through :func:`plugformer.generation.generate`, after a one-line note."""
from __future__ import annotations

import codecs
import json
import sys
from pathlib import Path
from typing import Any

from plugformer.errors import ConfigError


def read_prompts(path: str) -> list[str]:
    """Prompts from a ``.jsonl`` file (``{"prompt": ...}`` or a JSON string per line) or a text file (one
    per line); a bad line is named with its number."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"prompts={path}: no such file")
    prompts = []
    lines = file.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if file.suffix != ".jsonl":
            prompts.append(line)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"prompts={path} line {number}: not JSON ({exc.msg})") from None
        prompt = record.get("prompt") if isinstance(record, dict) else record
        if not isinstance(prompt, str):
            raise ConfigError(f"prompts={path} line {number}: expected {{\"prompt\": \"...\"}} or a JSON string")
        prompts.append(prompt)
    if not prompts:
        raise ConfigError(f"prompts={path} holds no prompt")
    return prompts


def sampling_params(cfg: Any) -> Any:
    """The engine's :class:`~plugformer.engine.SamplingParams` for a generate config."""
    from plugformer.engine import SamplingParams

    stop = [codecs.decode(str(s), "unicode_escape") for s in (cfg.stop or [])]
    return SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k or None,
                          top_p=cfg.top_p if cfg.top_p is not None else 1.0, min_p=cfg.min_p, seed=cfg.seed,
                          stop=stop, n=cfg.num_samples, repetition_penalty=cfg.repetition_penalty,
                          presence_penalty=cfg.presence_penalty, frequency_penalty=cfg.frequency_penalty,
                          ignore_eos=cfg.ignore_eos)


def run_generate(cfg: Any, registries: Any) -> None:
    from plugformer.checkpoint import check_new_file

    out = check_new_file(cfg.out) if cfg.get("out") else None
    prompts = read_prompts(cfg.prompts) if cfg.get("prompts") else [cfg.prompt]
    if cfg.num_beams > 1:
        return _beams(cfg, registries, prompts, out)
    params = sampling_params(cfg)
    engine = _engine(cfg, registries)
    if engine is None:
        return _one_at_a_time(cfg, registries, prompts, out)
    bar = _progress(len(prompts)) if cfg.get("prompts") else None
    results = engine.generate(prompts, params, progress=(lambda done, total: bar.update(done - bar.n)) if bar else None)
    if bar is not None:
        bar.close()
    if engine.speculator is not None:
        print(f"speculative decoding: {engine.speculator.accepted}/{engine.speculator.proposed} draft tokens "
              f"accepted ({engine.speculator.acceptance_rate:.0%})", file=sys.stderr)
    records = [{"prompt": r.prompt, "completions": [{"text": o.text, "finish_reason": o.finish_reason,
                                                     "tokens": len(o.token_ids)} for o in r.outputs]}
               for r in results]
    _emit(records, out)


def _engine(cfg: Any, registries: Any) -> Any:
    from plugformer.engine import Engine, RaggedUnsupported

    try:
        return Engine.from_checkpoint(cfg.checkpoint, registries=registries, device=cfg.device,
                                      precision=cfg.precision, adapter=cfg.get("adapter_dir"), draft=cfg.draft,
                                      num_speculative_tokens=cfg.num_speculative_tokens, max_batch=cfg.max_batch,
                                      kv_cache_tokens=cfg.kv_cache_tokens)
    except RaggedUnsupported as exc:
        if cfg.draft:
            raise
        print(f"plugformer: note: {exc}; generating one sequence at a time", file=sys.stderr)
        return None


def _beams(cfg: Any, registries: Any, prompts: list[str], out: Path | None) -> None:
    """Beam search (greedy, Hugging Face's rules); ``num_samples`` best beams per prompt, best first."""
    from plugformer.checkpoint import load_model_for_inference
    from plugformer.engine import beam_search
    from plugformer.engine.beam import check_beam_options

    check_beam_options(cfg.num_beams, cfg.max_new_tokens, cfg.length_penalty, cfg.early_stopping, cfg.num_samples)
    loaded = load_model_for_inference(cfg.checkpoint, registries, adapter=cfg.get("adapter_dir"), device=cfg.device)
    tokenizer = loaded.tokenizer
    records = []
    for prompt in prompts:
        beams = beam_search(loaded.model, tokenizer.encode(prompt), num_beams=cfg.num_beams,
                            max_tokens=cfg.max_new_tokens, eos_id=tokenizer.eos_id, length_penalty=cfg.length_penalty,
                            early_stopping=cfg.early_stopping, num_return_sequences=cfg.num_samples,
                            precision=cfg.precision, device=loaded.device)
        records.append({"prompt": prompt, "completions": [
            {"text": tokenizer.decode(b.token_ids), "finish_reason": b.finish_reason, "tokens": len(b.token_ids),
             "score": b.score} for b in beams]})
    _emit(records, out)


def _one_at_a_time(cfg: Any, registries: Any, prompts: list[str], out: Path | None) -> None:
    """The single-sequence path for models the engine cannot batch (plugin API 1.0 components)."""
    from plugformer.generation import Generator, Sampling

    gen = Generator.from_checkpoint(cfg.checkpoint, registries, cfg.device, cfg.precision,
                                    adapter=cfg.get("adapter_dir"))
    records = []
    for prompt in prompts:
        texts = []
        for i in range(cfg.num_samples):
            ids = gen.generate_ids(gen.tokenizer.encode(prompt), Sampling(
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                seed=cfg.seed + i))
            texts.append({"text": gen.tokenizer.decode(ids), "finish_reason": None, "tokens": len(ids)})
        records.append({"prompt": prompt, "completions": texts})
    _emit(records, out)


def _emit(records: list[dict], out: Path | None) -> None:
    if out is None:
        for record in records:
            for completion in record["completions"]:
                print(record["prompt"] + completion["text"])
        return
    from plugformer.checkpoint.durable import write_text_atomic

    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    print(f"wrote {len(records)} completions to {out}", file=sys.stderr)


def _progress(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generating", unit="prompt", delay=1.0, file=sys.stderr)


__all__ = ["read_prompts", "run_generate", "sampling_params"]
