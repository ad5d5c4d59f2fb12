"""Knowledge distillation: match a frozen teacher's softened next-token distribution (KL divergence),
optionally mixed with the cross-entropy of the true targets."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from plugformer import ConfigError
from plugformer.interfaces import Objective, ObjectiveOutput, SupervisedBatch
from torch import Tensor, nn

from plugformer_training.frozen import load_frozen
from plugformer_training.sft import as_supervised, masked_cross_entropy


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """Mean over kept positions of KL(teacher_T ‖ student_T), times T² (so gradients keep their scale
    as the temperature changes)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1) * temperature ** 2


class Distillation(Objective):
    """``alpha · T² · KL(teacher ‖ student) + (1 - alpha) · CE``; logs ``kl`` and ``ce``.

    The teacher (``objective.teacher``, a checkpoint directory) is loaded once, frozen, and moved to
    the student's device on first use. It must use the student's tokenizer.
    """

    causal = True

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        if config.temperature <= 0:
            raise ConfigError(f"objective.temperature must be positive, got {config.temperature}")
        if not 0.0 <= config.alpha <= 1.0:
            raise ConfigError(f"objective.alpha must be in [0, 1], got {config.alpha}")
        self.teacher = load_frozen(config.teacher, tokenizer, "teacher")
        self.teacher_max_len = self.teacher.dims.max_seq_len

    def __call__(self, model: nn.Module, tokens: Tensor | SupervisedBatch) -> ObjectiveOutput:
        batch = as_supervised(tokens, "distill")
        inputs = batch.tokens[:, :-1]
        if inputs.shape[1] > self.teacher_max_len:
            raise ConfigError(f"rows of {inputs.shape[1]} tokens exceed the teacher's max_seq_len "
                              f"{self.teacher_max_len}; lower data.seq_len")
        teacher_device = next(self.teacher.parameters()).device
        if teacher_device != inputs.device:
            self.teacher.to(inputs.device)
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        logits = model(inputs)
        kl = distillation_kl(logits, teacher_logits, batch.loss_mask.float(), self.config.temperature)
        ce = masked_cross_entropy(logits, batch)
        loss = self.config.alpha * kl + (1.0 - self.config.alpha) * ce
        return ObjectiveOutput(loss, {"kl": kl.detach(), "ce": ce.detach()})
