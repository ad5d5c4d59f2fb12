"""Causal language modelling."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from plugformer.interfaces import Objective, ObjectiveOutput


class CausalLM(Objective):
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from ``tokens[:, :-1]``."""

    causal = True

    def __call__(self, model: nn.Module, tokens: Tensor) -> ObjectiveOutput:
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(),
                               label_smoothing=self.config.label_smoothing)
        return ObjectiveOutput(loss)
