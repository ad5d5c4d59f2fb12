"""Text generation from a checkpoint: KV-cached decoding with greedy, temperature, top-k and top-p
sampling, deterministic for a fixed seed."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from plugformer.checkpoint import check_checkpoint_dir, load_model_for_inference  # noqa: F401 (re-exported)
from plugformer.interfaces import Tokenizer
from plugformer.model import Transformer
from plugformer.precision import autocast
from plugformer.registry import Registries


@dataclass
class Sampling:
    """How to pick each next token. ``temperature=0`` is greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Mask (to -inf) all but the ``top_k`` largest logits and outside the ``top_p`` nucleus."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > top_p  # keep the smallest prefix reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class Generator:
    """A model and its tokenizer, ready to continue prompts."""

    def __init__(self, model: Transformer, tokenizer: Tokenizer, device: torch.device, precision: str = "fp32"):
        self.model, self.tokenizer, self.device, self.precision = model.eval(), tokenizer, device, precision

    @classmethod
    def from_checkpoint(cls, path: str | Path, registries: Registries, device: str = "auto",
                        precision: str = "fp32", adapter: str | Path | None = None) -> Generator:
        """Load ``path`` (a ``checkpoints/step-N`` or ``last`` directory written by the trainer, or a merged
        or quantized checkpoint) through :func:`plugformer.checkpoint.load_model_for_inference`, with the
        adapter directory ``adapter`` applied unmerged when given."""
        loaded = load_model_for_inference(path, registries, adapter=adapter, device=device)
        return cls(loaded.model, loaded.tokenizer, loaded.device, precision)

    @torch.no_grad()
    def generate_ids(self, prompt: list[int], sampling: Sampling, use_cache: bool = True) -> list[int]:
        """Continue ``prompt``; stops after ``max_new_tokens`` or at the end-of-document id."""
        max_len = self.model.dims.max_seq_len
        ids = list(prompt) or [self.tokenizer.eos_id]
        if len(ids) + sampling.max_new_tokens > max_len:
            ids = ids[-max(1, max_len - sampling.max_new_tokens):]
        gen = torch.Generator(device=self.device).manual_seed(sampling.seed)
        cache = self.model.new_cache(1, max_len) if use_cache else None
        tokens = torch.tensor([ids], device=self.device)
        out: list[int] = []
        step_input = tokens
        for _ in range(sampling.max_new_tokens):
            with autocast(self.device, self.precision):
                logits = self.model(step_input if use_cache else tokens, cache=cache)[:, -1, :].float()
            next_id = self._pick(logits, sampling, gen)
            if next_id == self.tokenizer.eos_id:
                break
            out.append(next_id)
            step_input = torch.tensor([[next_id]], device=self.device)
            tokens = torch.cat([tokens, step_input], dim=1)
            if tokens.shape[1] >= max_len:
                break
        return out

    @staticmethod
    def _pick(logits: Tensor, sampling: Sampling, gen: torch.Generator) -> int:
        if sampling.temperature <= 0:
            return int(logits.argmax(-1))
        logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen))

    def complete(self, prompt: str, **sampling: Any) -> str:
        """The generated continuation of ``prompt`` as text."""
        ids = self.generate_ids(self.tokenizer.encode(prompt), Sampling(**sampling))
        return self.tokenizer.decode(ids)
