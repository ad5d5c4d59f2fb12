"""A NaN loss never becomes a checkpoint: ``trainer.on_nonfinite=stop`` ends the run naming the step and
keeps the last finite checkpoint; ``skip`` drops that step's update and trains on; metrics stay JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plugformer import ConfigError
from plugformer.build import build
from plugformer.checkpoint import load_model
from plugformer.training import Trainer
from plugformer.training.nonfinite import NonFiniteError, NonFiniteGuard


class NaNAtSteps:
    """The trainer's objective, returning a NaN loss (and so NaN gradients) at the given steps."""

    def __init__(self, trainer: Trainer, steps: set[int]):
        self.inner, self.trainer, self.steps = trainer.objective, trainer, steps

    def __call__(self, model, batch):
        out = self.inner(model, batch)
        if self.trainer.step in self.steps:
            out.loss = out.loss * float("nan")
        return out


def _trainer(builtin_host, tiny_config, tmp_path: Path, *overrides: str) -> Trainer:
    cfg = tiny_config("tokenizer=byte", "data.max_bytes=200000", f"data.cache_dir={tmp_path / 'cache'}",
                      "trainer.max_steps=8", "trainer.save_every=2", "trainer.keep_last=1", "trainer.log_every=1",
                      "trainer.eval_every=0", "trainer.eval_batches=1", "trainer.callbacks=[metrics]", *overrides)
    strategy = build(builtin_host.registries, "parallel", cfg.parallel)
    return Trainer(cfg, tmp_path / "run", builtin_host, strategy, strategy.setup("cpu"))


def strict_rows(path: Path) -> list[dict]:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_finite_checkpoint(builtin_host, tiny_config,
                                                                                       tmp_path):
    trainer = _trainer(builtin_host, tiny_config, tmp_path)
    trainer.objective = NaNAtSteps(trainer, {5})
    with pytest.raises(NonFiniteError) as err:
        trainer.fit()
    message = str(err.value)
    assert "non-finite loss at step 5" in message and "\n" not in message
    checkpoints = tmp_path / "run" / "checkpoints"
    assert str(checkpoints / "step-4") in message and "trainer.on_nonfinite=skip" in message
    assert sorted(p.name for p in checkpoints.glob("step-*")) == ["step-4"]  # keep_last=1 kept the finite one
    assert (checkpoints / "last").resolve().name == "step-4"
    assert all(torch.isfinite(t).all() for t in load_model(checkpoints / "step-4").values())
    rows = strict_rows(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and not (tmp_path / "run" / "summary.json").exists()


def test_skip_drops_the_non_finite_update_and_trains_on(builtin_host, tiny_config, tmp_path, capsys):
    trainer = _trainer(builtin_host, tiny_config, tmp_path, "trainer.on_nonfinite=skip")
    trainer.objective = NaNAtSteps(trainer, {3})
    summary = trainer.fit()
    assert summary["step"] == 8 and trainer.nonfinite.skipped == [3]
    assert "step 3: non-finite loss; update skipped (trainer.on_nonfinite=skip)" in capsys.readouterr().err
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    rows = {r["step"]: r for r in strict_rows(tmp_path / "run" / "metrics.jsonl") if "loss" in r}
    assert rows[3]["loss"] is None and all(rows[s]["loss"] is not None for s in (1, 2, 4, 8))


def test_weights_that_are_not_finite_are_never_saved(builtin_host, tiny_config, tmp_path):
    trainer = _trainer(builtin_host, tiny_config, tmp_path, "trainer.on_nonfinite=skip")
    trainer.step = 2
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="non-finite weights after step 2; stopped without saving it"):
        trainer.save()
    assert not list((tmp_path / "run" / "checkpoints").glob("*step-*"))


def test_an_unknown_mode_is_a_one_line_error(builtin_host):
    from plugformer.interfaces import ParallelStrategy

    strategy: ParallelStrategy = build(builtin_host.registries, "parallel", {"name": "single"})
    with pytest.raises(ConfigError, match="trainer.on_nonfinite='ignore' is not one of: stop, skip"):
        NonFiniteGuard("ignore", strategy, torch.device("cpu"))


def test_a_skipped_step_in_the_last_log_window_leaves_summary_json_strict(builtin_host, tiny_config, tmp_path):
    trainer = _trainer(builtin_host, tiny_config, tmp_path, "trainer.on_nonfinite=skip", "trainer.log_every=4")
    trainer.objective = NaNAtSteps(trainer, {7})
    trainer.fit()
    text = (tmp_path / "run" / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda token: pytest.fail(f"not JSON: {token}"))
    assert summary["step"] == 8 and summary["loss"] is None
