"""Masked language modelling (BERT): predict randomly masked tokens from both sides."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plugformer import ConfigError
from plugformer.interfaces import Objective, ObjectiveOutput
from plugformer_training.schemas import MLMConfig


class MaskedLM(Objective):
    """BERT's 80/10/10 corruption of ``mask_fraction`` of the positions; loss and accuracy on those only.

    Training draws masks from torch's global RNG (reseeded per step by the trainer, so resume stays
    exact); evaluation (``model.training`` is False) uses a generator seeded with ``eval_seed``.
    """

    causal = False

    def __init__(self, config: MLMConfig, tokenizer):
        super().__init__(config, tokenizer)
        if getattr(tokenizer, "mask_id", None) is None:
            raise ConfigError(f"objective 'mlm' needs a tokenizer with a <mask> token; "
                              f"tokenizer {type(tokenizer).__name__} has none")
        if not 0 < config.mask_fraction < 1 or config.replace_mask + config.replace_random > 1:
            raise ConfigError("objective 'mlm': need 0 < mask_fraction < 1 and replace_mask + replace_random <= 1")
        self.mask_id, self.vocab_size = tokenizer.mask_id, tokenizer.vocab_size

    def corrupt(self, tokens: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """(inputs, selected): tokens with the selected positions corrupted, and the selection mask."""
        rand = lambda: torch.rand(tokens.shape, generator=generator, device="cpu").to(tokens.device)  # noqa: E731
        selected = rand() < self.config.mask_fraction
        action = rand()
        to_mask = selected & (action < self.config.replace_mask)
        to_random = selected & ~to_mask & (action < self.config.replace_mask + self.config.replace_random)
        random_ids = torch.randint(0, self.vocab_size, tokens.shape, generator=generator, device="cpu")
        inputs = torch.where(to_mask, torch.full_like(tokens, self.mask_id), tokens)
        inputs = torch.where(to_random, random_ids.to(tokens.device), inputs)
        return inputs, selected

    def __call__(self, model: nn.Module, tokens: Tensor) -> ObjectiveOutput:
        tokens = tokens[:, :-1]  # windows come with one extra token for causal LMs; not needed here
        generator = None if model.training else torch.Generator().manual_seed(self.config.eval_seed)
        inputs, selected = self.corrupt(tokens, generator)
        logits = model(inputs)[selected].float()
        targets = tokens[selected]
        if targets.numel() == 0:  # nothing selected in a tiny batch: a zero loss that still has a graph
            return ObjectiveOutput(model(inputs).sum() * 0.0, {"masked_accuracy": torch.zeros(())})
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(-1) == targets).float().mean().detach()
        return ObjectiveOutput(loss, {"masked_accuracy": accuracy})
