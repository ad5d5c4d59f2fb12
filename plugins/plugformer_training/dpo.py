"""Direct preference optimisation: raise the policy's log-likelihood margin of the chosen over the
rejected response, relative to a frozen reference model (Rafailov et al., 2023)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from plugformer import ConfigError
from plugformer.interfaces import (
    Objective,
    ObjectiveOutput,
    PreferenceBatch,
    SupervisedBatch,
)
from torch import Tensor, nn

from plugformer_training.frozen import load_frozen


def response_logprob(model: nn.Module, batch: SupervisedBatch) -> Tensor:
    """Sum of the log-probabilities of each row's kept targets (B,)."""
    logits = model(batch.tokens[:, :-1]).float()
    logp = torch.gather(F.log_softmax(logits, -1), -1, batch.tokens[:, 1:, None]).squeeze(-1)
    return (logp * batch.loss_mask).sum(-1)


def dpo_loss(policy_margin: Tensor, reference_margin: Tensor, beta: float, label_smoothing: float = 0.0) -> Tensor:
    """Mean DPO loss of log-ratio margins (chosen minus rejected) of policy and reference."""
    z = beta * (policy_margin - reference_margin)
    return (-(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)).mean()


class DirectPreference(Objective):
    """DPO on :class:`PreferenceBatch` pairs; logs ``reward_accuracy`` (share of pairs whose implicit
    reward prefers the chosen response) and ``reward_margin``.

    The reference is ``objective.reference`` (a checkpoint directory) or, when unset, a frozen copy of
    the policy taken at the first batch this objective sees (``plugformer finetune`` sets it to the
    starting checkpoint, so a resumed run keeps the same reference).
    """

    causal = True

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        if config.beta <= 0:
            raise ConfigError(f"objective.beta must be positive, got {config.beta}")
        if not 0.0 <= config.label_smoothing < 0.5:
            raise ConfigError(f"objective.label_smoothing must be in [0, 0.5), got {config.label_smoothing}")
        self.reference = load_frozen(config.reference, tokenizer, "reference") if config.reference else None

    def _reference(self, model: nn.Module, device: torch.device) -> nn.Module:
        if self.reference is None:
            policy = getattr(model, "module", model)  # a data-parallel wrapper holds the model in .module
            self.reference = copy.deepcopy(policy).eval()
            self.reference.requires_grad_(False)
        if next(self.reference.parameters()).device != device:
            self.reference.to(device)
        return self.reference

    def __call__(self, model: nn.Module, batch: PreferenceBatch) -> ObjectiveOutput:
        if not isinstance(batch, PreferenceBatch):
            raise ConfigError("objective 'dpo' needs preference pairs: records with prompt, chosen and rejected "
                              "(e.g. data=addition data.format=preference)")
        reference = self._reference(model, batch.chosen.tokens.device)
        with torch.no_grad():
            ref_margin = response_logprob(reference, batch.chosen) - response_logprob(reference, batch.rejected)
        margin = response_logprob(model, batch.chosen) - response_logprob(model, batch.rejected)
        loss = dpo_loss(margin, ref_margin, self.config.beta, self.config.label_smoothing)
        with torch.no_grad():
            reward = self.config.beta * (margin - ref_margin)
        return ObjectiveOutput(loss, {"reward_accuracy": (reward > 0).float().mean(),
                                      "reward_margin": reward.mean()})
