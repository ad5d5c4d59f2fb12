"""Objective contract: ``Cls(config, tokenizer)`` turns a (B, seq_len + 1) int64 batch (or, for objectives
declaring ``batches: ["preference"]``, a :class:`PreferenceBatch` of such rows; ``["pairs"]``, a :class:`PairBatch`)
into a scalar, finite, differentiable loss with detached metrics; its ``causal`` flag matches its declaration; and a
few optimizer steps on one batch lower the loss. Runs on a kit-local tiny model and tokenizer (with
``<pad>``, ``<mask>`` and ``<eos>`` ids, so masked-LM objectives work too)."""
from __future__ import annotations

import pytest
import torch

from plugformer.interfaces import (
    Objective,
    ObjectiveOutput,
    PairBatch,
    PreferenceBatch,
    SupervisedBatch,
)
from plugformer.registry import Entry
from plugformer.testing.construct import build, devices, label
from plugformer.testing.toy import ToyTokenizer, language_model, token_batch

contract = pytest.mark.plugformer_contract


def objective(entry: Entry) -> Objective:
    return build(entry, ToyTokenizer(None))


def batch_for(entry: Entry, device: str):
    """Token windows, preference pairs (the same prompts with two different continuations, only the
    continuations scored) for objectives that declare ``batches: ["preference"]``, or texts to embed in pairs
    (each row's first half the query, its second half the positive) for ``batches: ["pairs"]``."""
    tokens = token_batch(28, device)
    batches = entry.capabilities.get("batches", ["windows"])
    if "windows" in batches:
        return tokens
    if "pairs" in batches:
        half, mask = tokens.shape[1] // 2, torch.ones_like(tokens, dtype=torch.bool)
        return PairBatch(tokens[:, :half], mask[:, :half], tokens[:, half:], mask[:, half:])
    mask = torch.zeros_like(tokens[:, 1:], dtype=torch.bool)
    mask[:, tokens.shape[1] // 2:] = True
    rejected = tokens.clone()
    rejected[:, tokens.shape[1] // 2 + 1:] = tokens[:, tokens.shape[1] // 2 + 1:].flip(1)
    return PreferenceBatch(SupervisedBatch(tokens, mask), SupervisedBatch(rejected, mask))


@contract("objective")
def test_causal_flag_matches_the_declaration(entry: Entry) -> None:
    causal = objective(entry).causal
    assert isinstance(causal, bool), f"{label(entry)}: causal is {causal!r}, not a bool"
    if "causal" in entry.capabilities:
        assert causal == entry.capabilities["causal"], \
            f"{label(entry)}: declares causal={entry.capabilities['causal']} but its class says {causal}"


@contract("objective")
def test_loss_is_a_finite_differentiable_scalar(entry: Entry) -> None:
    for device in devices(entry):
        obj = objective(entry)
        model = language_model(ToyTokenizer(None).vocab_size, obj.causal, device=device)
        torch.manual_seed(0)
        out = obj(model, batch_for(entry, device))
        what = label(entry, device=device)
        assert isinstance(out, ObjectiveOutput), f"{what}: returns {type(out).__name__}, not ObjectiveOutput"
        assert out.loss.ndim == 0 and out.loss.is_floating_point(), f"{what}: loss {tuple(out.loss.shape)}"
        assert torch.isfinite(out.loss), f"{what}: loss is {float(out.loss.detach())}"
        out.loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), \
            f"{what}: the loss does not reach the model's parameters"
        for key, value in out.metrics.items():
            assert isinstance(value, torch.Tensor) and not value.requires_grad, \
                f"{what}: metric {key!r} must be a detached tensor"


#: ``FIT_STEPS`` Adam steps (lr ``FIT_LR``) on one fixed batch must bring the objective's loss below
#: ``FIT_LOSS_RATIO`` × a fresh model's loss: memorising one batch is the easiest task there is, so any
#: objective whose gradient points the right way clears a 20 % drop by far; one that ignores the targets,
#: or whose loss does not reach the parameters, does not
FIT_STEPS = 25
FIT_LR = 1e-2
FIT_LOSS_RATIO = 0.8


@contract("objective")
def test_a_few_steps_lower_the_loss(entry: Entry) -> None:
    for device in devices(entry):
        obj = objective(entry)
        model = language_model(ToyTokenizer(None).vocab_size, obj.causal, device=device)
        optimizer = torch.optim.Adam(model.parameters(), lr=FIT_LR)
        batch, losses = batch_for(entry, device), []
        for step in range(FIT_STEPS):
            torch.manual_seed(step)  # objectives that sample (masking) draw the same way in both runs
            loss = obj(model, batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        torch.manual_seed(0)
        start = float(obj(language_model(31, obj.causal, device=device), batch).loss.detach())
        torch.manual_seed(0)
        end = float(obj(model, batch).loss.detach())
        assert end < FIT_LOSS_RATIO * start, f"{label(entry, device=device)}: loss {start:.3f} → {end:.3f} after " \
            f"{FIT_STEPS} steps; the kit requires it below {FIT_LOSS_RATIO} × the first loss"
