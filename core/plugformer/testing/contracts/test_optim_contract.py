"""Optimizer and scheduler contract.

Optimizers (``factory(config, model)``): cover every trainable parameter exactly once, reduce the loss
of a toy regression, and resume exactly from a state dict saved the way checkpoints save it
(JSON + safetensors). Schedulers (``factory(config, optimizer, max_steps)``): finite, non-negative
learning rates that are not all zero, and an exact resume from a checkpointed state dict.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from plugformer.checkpoint import load_state, save_state
from plugformer.registry import Entry
from plugformer.testing.construct import build, devices, label
from plugformer.testing.reference import assert_close
from plugformer.testing.toy import regression_batch, regression_loss, regression_model

contract = pytest.mark.plugformer_contract
#: the schedule length the scheduler cases use: short enough to run in microseconds, long enough for a
#: warmup and a decay phase to both be visible
MAX_STEPS = 20
#: an optimizer, at its schema's default learning rate, must bring the toy regression's loss below
#: ``TOY_LOSS_RATIO`` × its first value within ``TOY_STEPS`` steps. The toy (16 embeddings → LayerNorm →
#: Linear, mse against fixed targets) is fitted exactly by any working optimizer; a 10 % drop is loose
#: enough for slow defaults (Adam/AdamW at lr 1e-3 drop it by roughly a third in 60 steps) and still fails
#: an optimizer that never updates, diverges or steps the wrong way
TOY_STEPS = 60
TOY_LOSS_RATIO = 0.9
#: parameters after resuming from a checkpointed optimizer state equal the uninterrupted run's to this
#: (float32 rounding of a few identical steps; a lost moment or step counter is orders of magnitude larger)
RESUME_ATOL, RESUME_RTOL = 1e-6, 1e-5


def checkpointed(state: dict[str, Any]) -> Any:
    """``state`` after a trip through the checkpoint format (plain data in JSON, tensors in safetensors)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_state(Path(tmp), "state", state)
        return load_state(Path(tmp), "state")


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, device: str) -> list[float]:
    batch, losses = regression_batch(device), []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = regression_loss(model, batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@contract("optimizer")
def test_optimizer_covers_every_trainable_parameter_once(entry: Entry) -> None:
    model = regression_model()
    optimizer = build(entry, model)
    assert isinstance(optimizer, torch.optim.Optimizer), f"{label(entry)}: returns {type(optimizer).__name__}"
    ids = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(ids) == len(set(ids)), f"{label(entry)}: a parameter is in two param groups"
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in ids]
    assert not missing, f"{label(entry)}: never updates {', '.join(missing)}"


@contract("optimizer")
def test_optimizer_reduces_a_toy_loss(entry: Entry) -> None:
    for device in devices(entry):
        model = regression_model(device=device)
        losses = train(model, build(entry, model), TOY_STEPS, device)
        what = label(entry, device=device)
        assert all(map(torch.isfinite, torch.tensor(losses))), f"{what}: non-finite loss {losses}"
        assert losses[-1] < TOY_LOSS_RATIO * losses[0], \
            f"{what}: loss {losses[0]:.4f} → {losses[-1]:.4f} after {TOY_STEPS} steps; the kit requires it below " \
            f"{TOY_LOSS_RATIO} × the first loss"


@contract("optimizer")
def test_optimizer_resumes_exactly_from_a_checkpoint(entry: Entry) -> None:
    for device in devices(entry):
        straight = regression_model(device=device)
        train(straight, build(entry, straight), 6, device)
        first = regression_model(device=device)
        optimizer = build(entry, first)
        train(first, optimizer, 3, device)
        state = checkpointed(optimizer.state_dict())
        resumed = regression_model(seed=1, device=device)
        resumed.load_state_dict(first.state_dict())
        optimizer = build(entry, resumed)
        optimizer.load_state_dict(state)
        train(resumed, optimizer, 3, device)
        for (name, want), got in zip(straight.named_parameters(), resumed.parameters()):
            assert_close(got, want, f"{label(entry, device=device)}: {name} differs after resuming at step 3",
                         atol=RESUME_ATOL, rtol=RESUME_RTOL)


def lr_trace(entry: Entry, steps: int, state: Any = None) -> tuple[list[float], Any]:
    """Learning rates after each of ``steps`` steps (from ``state`` if given), and the final state."""
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = build(entry, optimizer, MAX_STEPS)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    lrs = []
    for _ in range(steps):
        param.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}


@contract("scheduler")
def test_scheduler_learning_rates_are_usable(entry: Entry) -> None:
    lrs, _ = lr_trace(entry, MAX_STEPS + 5)
    what = label(entry, max_steps=MAX_STEPS)
    assert all(math.isfinite(lr) for lr in lrs), f"{what}: non-finite learning rate in {lrs}"
    assert min(lrs) >= 0, f"{what}: negative learning rate in {lrs}"
    assert max(lrs[:MAX_STEPS]) > 0, f"{what}: the learning rate is zero for all {MAX_STEPS} steps"


@contract("scheduler")
def test_scheduler_resumes_exactly_from_a_checkpoint(entry: Entry) -> None:
    straight, _ = lr_trace(entry, MAX_STEPS)
    _, state = lr_trace(entry, 8)
    resumed, _ = lr_trace(entry, MAX_STEPS - 8, checkpointed(state))
    assert resumed == pytest.approx(straight[8:], rel=1e-9, abs=1e-12), \
        f"{label(entry)}: after resuming at step 8 the rates are {resumed}, not {straight[8:]}"
