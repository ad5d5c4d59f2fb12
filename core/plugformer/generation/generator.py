"""A model and its tokenizer, ready to continue text prompts: the object ``plugformer generate`` uses."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from plugformer.generation.engine import Completion, generate
from plugformer.generation.sampling import Sampling
from plugformer.checkpoint import load_model_for_inference
from plugformer.interfaces import Tokenizer
from plugformer.model import Transformer
from plugformer.registry import Registries


class Generator:
    """A model and its tokenizer, ready to continue prompts through :func:`plugformer.generation.generate`."""

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

    def generate(self, prompts: list[list[int]], sampling: Sampling | list[Sampling],
                 use_cache: bool = True, crop_prompts: bool = False) -> list[Completion]:
        """Completions of token prompts (see :func:`plugformer.generation.generate`)."""
        return generate(self.model, prompts, sampling, eos_id=self.tokenizer.eos_id, precision=self.precision,
                        use_cache=use_cache, device=self.device, crop_prompts=crop_prompts)

    def generate_ids(self, prompt: list[int], sampling: Sampling, use_cache: bool = True,
                     crop_prompt: bool = False) -> list[int]:
        """The new ids continuing one token prompt; stops after ``max_new_tokens``, at the end-of-document
        id (left out) or when the context is full. A prompt that leaves no room for ``max_new_tokens`` is
        refused naming both numbers, or keeps its tail with ``crop_prompt``."""
        return self.generate([prompt], sampling, use_cache, crop_prompt)[0].tokens

    def complete(self, prompt: str, **sampling: Any) -> str:
        """The generated continuation of ``prompt`` as text; keyword arguments are :class:`Sampling`'s."""
        return self.tokenizer.decode(self.generate_ids(self.tokenizer.encode(prompt), Sampling(**sampling)))


__all__ = ["Generator"]
