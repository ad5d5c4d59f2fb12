"""Contrastive training of a bi-encoder: InfoNCE over pooled embeddings of query/positive pairs, every other
positive of the batch (and each query's hard negative, when the records have one) serving as a negative.

The model is an ordinary plugformer Transformer and its checkpoint an ordinary one; the embedding of a text is
:func:`plugformer.retrieval.pooled_embeddings` with ``objective.pooling``, which the ``pooled`` embedder reads
back from the checkpoint's config, so a text is embedded at inference exactly as it was in training.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from plugformer import ConfigError
from plugformer.interfaces import Objective, ObjectiveOutput, PairBatch
from plugformer.retrieval import POOLINGS, pooled_embeddings
from torch import Tensor, nn


def same_rows(tokens: Tensor, mask: Tensor) -> Tensor:
    """(B, B) bool: True where two rows hold the same text (equal tokens at equal real positions)."""
    _, text = torch.unique(tokens.masked_fill(~mask, -1), dim=0, return_inverse=True)  # one id per distinct row
    return text[:, None] == text[None, :]


#: the largest logit scale (1 / temperature) a learned temperature may reach, as in CLIP: temperature >= 0.01
MAX_LOGIT_SCALE = 100.0


class LearnedTemperature(nn.Module):
    """The temperature as a trained parameter: ``logit_scale`` = log(1 / temperature), so the temperature stays
    positive and moves multiplicatively; the scale it gives is capped at :data:`MAX_LOGIT_SCALE` (no gradient
    pushes it further)."""

    def __init__(self, temperature: float):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def temperature(self) -> Tensor:
        """The current temperature (a 0-d tensor that back-propagates into :attr:`logit_scale`)."""
        return 1.0 / self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()


def info_nce(queries: Tensor, candidates: Tensor, temperature: float | Tensor, ignore: Tensor | None = None) -> Tensor:
    """Mean cross-entropy of picking candidate ``i`` for query ``i`` among all ``candidates`` (rows unit length,
    ``(B, D)`` and ``(C, D)`` with ``C >= B``), similarities divided by ``temperature`` (a number, or a 0-d tensor
    that is learned through the loss). ``ignore`` (B, C) bool marks
    candidates that are not negatives of a query (a duplicate of its positive) and are left out of its softmax."""
    logits = queries @ candidates.T / temperature
    if ignore is not None:
        logits = logits.masked_fill(ignore, float("-inf"))
    return F.cross_entropy(logits.float(), torch.arange(queries.shape[0], device=queries.device))


class Contrastive(Objective):
    """InfoNCE (in-batch negatives, optional hard negatives) at a fixed ``temperature``, or, with
    ``learn_temperature: true``, at a temperature trained with the model (starting at ``temperature``; its
    :class:`LearnedTemperature` is the objective's :meth:`trainable_module`, logged as ``temperature``).

    Logs ``in_batch_accuracy``: the share of queries whose own positive scores highest among every candidate of
    the batch, and ``positive_similarity``: the mean cosine of a query and its positive. ``symmetric: true`` adds
    the passage → query direction (each positive picks its query among the batch's queries) and averages the two.
    Duplicate texts in a batch (the same positive for two queries) are not counted as each other's negatives.
    """

    causal = True
    parameters_option = "learn_temperature"

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        if not config.temperature > 0:
            raise ConfigError(f"objective.temperature must be positive, got {config.temperature}")
        self.learned: LearnedTemperature | None = None
        if getattr(config, "learn_temperature", False):
            if config.temperature < 1.0 / MAX_LOGIT_SCALE:
                raise ConfigError(f"objective.temperature={config.temperature} is below {1.0 / MAX_LOGIT_SCALE}, the "
                                  f"lowest a learned temperature may reach (logit scale <= {MAX_LOGIT_SCALE:g}); start "
                                  "higher, or set objective.learn_temperature=false")
            self.learned = LearnedTemperature(float(config.temperature))
        pooling = getattr(config.pooling, "value", config.pooling)  # the schema's enum, or a plain string
        if pooling not in POOLINGS:
            raise ConfigError(f"objective.pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
        self.temperature, self.pooling, self.symmetric = float(config.temperature), pooling, bool(config.symmetric)

    def trainable_module(self) -> nn.Module | None:
        """The :class:`LearnedTemperature` when ``learn_temperature`` is on, else None."""
        return self.learned

    def __call__(self, model: nn.Module, batch: PairBatch) -> ObjectiveOutput:
        if not isinstance(batch, PairBatch):
            raise ConfigError("objective 'contrastive' needs query/positive pairs: data=stdlib_pairs, or data=jsonl "
                              "data.path=<file of {\"query\", \"positive\"} records>")
        queries = pooled_embeddings(model, batch.query, batch.query_mask, self.pooling)
        positives = pooled_embeddings(model, batch.positive, batch.positive_mask, self.pooling)
        n = queries.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=queries.device)
        duplicate = same_rows(batch.positive, batch.positive_mask) & ~eye  # the same text is no negative
        candidates, ignore = positives, duplicate
        if batch.negative is not None:
            negatives = pooled_embeddings(model, batch.negative, batch.negative_mask, self.pooling)
            candidates = torch.cat([positives, negatives])
            ignore = torch.cat([duplicate, torch.zeros_like(duplicate)], dim=1)
        temperature = self.learned.temperature() if self.learned is not None else self.temperature
        loss = info_nce(queries, candidates, temperature, ignore)
        if self.symmetric:
            backward = info_nce(positives, queries, temperature, same_rows(batch.query, batch.query_mask) & ~eye)
            loss = (loss + backward) / 2
        with torch.no_grad():
            scores = (queries @ candidates.T).masked_fill(ignore, float("-inf"))
            accuracy = (scores.argmax(dim=1) == torch.arange(n, device=scores.device)).float().mean()
            similarity = (queries * positives).sum(dim=1).mean()
        metrics = {"in_batch_accuracy": accuracy, "positive_similarity": similarity}
        if self.learned is not None:
            metrics["temperature"] = temperature.detach()
        return ObjectiveOutput(loss, metrics)
