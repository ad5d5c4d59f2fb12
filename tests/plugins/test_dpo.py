"""DPO: preference pairs raise the policy's likelihood margin of chosen over rejected answers relative
to a frozen reference (a copy of the starting policy, or a checkpoint)."""
from __future__ import annotations

import math

import pytest
import torch
from plugformer.build import build
from plugformer.errors import ConfigError
from plugformer.interfaces import PreferenceBatch
from plugformer.model import build_model
from plugformer.training.supervised import ChatTemplate, SupervisedData
from plugformer_text.byte_tokenizer import ByteTokenizer
from plugformer_training.dpo import dpo_loss, response_logprob

TOK = ByteTokenizer(None)


def test_the_loss_is_log2_at_the_reference_and_falls_as_the_margin_grows():
    zero = torch.zeros(4)
    assert dpo_loss(zero, zero, beta=0.1).item() == pytest.approx(math.log(2))
    assert dpo_loss(torch.full((4,), 5.0), zero, 0.1) < dpo_loss(torch.full((4,), 1.0), zero, 0.1) < math.log(2)
    assert (dpo_loss(torch.full((4,), 50.0), zero, 0.1, label_smoothing=0.2)
            > dpo_loss(torch.full((4,), 50.0), zero, 0.1))




def test_dpo_training_prefers_the_chosen_answers(registries, tiny_config):
    task = build(registries, "data", {"name": "addition", "n_train": 64, "n_val": 16, "format": "preference"})
    data = SupervisedData(task, TOK, ChatTemplate(), seq_len=16, batch_size=16, eval_batches=1, seed=0)
    torch.manual_seed(0)
    policy = build_model(tiny_config("tokenizer=byte"), registries, TOK.vocab_size)
    objective = build(registries, "objective", {"name": "dpo", "beta": 0.5}, TOK)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    first = None
    for step in range(1, 61):
        batch = data.train_batch(step, 16)
        assert isinstance(batch, PreferenceBatch)
        out = objective(policy, batch)
        first = first if first is not None else out
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert first.loss.item() == pytest.approx(math.log(2), abs=1e-5)  # the reference is the starting policy
    seen = data.train_batch(1, 16)  # 60 steps of 16 cover the 64 training pairs 15 times
    with torch.no_grad():
        out = objective(policy, seen)
    assert out.metrics["reward_accuracy"] > 0.75 and out.loss < 0.55, (out.metrics, out.loss)
    val = seen
    # the reference stayed frozen at the starting weights while the policy moved
    assert not torch.equal(response_logprob(objective.reference, val.chosen), response_logprob(policy, val.chosen))


def test_dpo_needs_preference_pairs(registries, tiny_config):
    objective = build(registries, "objective", {"name": "dpo"}, TOK)
    model = build_model(tiny_config("tokenizer=byte"), registries, TOK.vocab_size)
    with pytest.raises(ConfigError, match="needs preference pairs"):
        objective(model, torch.randint(0, 256, (2, 8)))


def test_bad_dpo_options_are_one_line_errors(registries):
    with pytest.raises(ConfigError, match="objective.beta must be positive"):
        build(registries, "objective", {"name": "dpo", "beta": 0}, TOK)
    with pytest.raises(ConfigError, match="is not a plugformer checkpoint directory"):
        build(registries, "objective", {"name": "dpo", "reference": "/nonexistent"}, TOK)
