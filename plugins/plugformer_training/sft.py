"""Supervised fine-tuning: causal LM loss on the response tokens only (prompt and padding masked)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from plugformer import ConfigError
from plugformer.interfaces import Objective, ObjectiveOutput, SupervisedBatch
from torch import Tensor, nn

IGNORE_INDEX = -100


def as_supervised(batch: Tensor | SupervisedBatch, objective: str) -> SupervisedBatch:
    """A supervised batch for ``batch``: plain windows count every target."""
    if isinstance(batch, SupervisedBatch):
        return batch
    if isinstance(batch, Tensor):
        return SupervisedBatch.unmasked(batch)
    raise ConfigError(f"objective '{objective}' takes token windows or prompt/response records, not "
                      f"{type(batch).__name__} (preference pairs need objective=dpo)")


def masked_cross_entropy(logits: Tensor, batch: SupervisedBatch, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over the targets the mask keeps (0 when it keeps none)."""
    targets = batch.targets(IGNORE_INDEX)
    if not bool(batch.loss_mask.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing)


def token_accuracy(logits: Tensor, batch: SupervisedBatch) -> Tensor:
    """Share of the kept targets the model ranks first."""
    hit = (logits.argmax(-1) == batch.tokens[:, 1:]) & batch.loss_mask
    return hit.sum().float() / batch.loss_mask.sum().clamp(min=1)


class SupervisedLM(Objective):
    """Cross-entropy of the response tokens given everything before them; logs ``token_accuracy``.

    On plain token windows (``plugformer train``) every target counts, which is exactly ``clm``.
    """

    causal = True

    def __call__(self, model: nn.Module, tokens: Tensor | SupervisedBatch) -> ObjectiveOutput:
        batch = as_supervised(tokens, "sft")
        logits = model(batch.tokens[:, :-1])
        loss = masked_cross_entropy(logits, batch, self.config.label_smoothing)
        with torch.no_grad():
            accuracy = token_accuracy(logits, batch)
        return ObjectiveOutput(loss, {"token_accuracy": accuracy})
