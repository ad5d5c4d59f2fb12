"""The training loop's arithmetic: gradient accumulation and the data-parallel split don't change what
a step computes; callbacks installed as plugins read the model, optimizer and gradients through the
training state, add metrics to metrics.jsonl (a gradient-norm logger), keep EMA weights, and stop early."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from plugformer import ConfigError, PlugformerError, TrainingState, hookimpl
from plugformer.build import build
from plugformer.training import Trainer


def _trainer(builtin_host, tiny_config, tmp_path: Path, *overrides: str) -> Trainer:
    cfg = tiny_config("tokenizer=byte", "data.max_bytes=200000", f"data.cache_dir={tmp_path / 'cache'}",
                      "model.dropout=0.0", *overrides)
    strategy = build(builtin_host.registries, "parallel", cfg.parallel)
    return Trainer(cfg, tmp_path / "run", builtin_host, strategy, strategy.setup("cpu"))


def test_gradient_accumulation_matches_one_big_batch(builtin_host, tiny_config, tmp_path):
    whole = _trainer(builtin_host, tiny_config, tmp_path, "trainer.batch_size=4", "trainer.grad_accum=1")
    split = _trainer(builtin_host, tiny_config, tmp_path, "trainer.batch_size=4", "trainer.grad_accum=2")
    split.model.load_state_dict(whole.model.state_dict())
    for step in (1, 2, 3):
        whole.step = split.step = step
        a, b = whole.train_step(), split.train_step()
        assert torch.allclose(a, b, atol=1e-5), (step, a, b)
    for p, q in zip(whole.model.parameters(), split.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_batch_size_must_split_evenly_across_ranks_and_micro_batches(builtin_host, tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="trainer.batch_size=3"):
        _trainer(builtin_host, tiny_config, tmp_path, "trainer.batch_size=3", "trainer.grad_accum=2")


# -- callbacks as plugins: they read the model, optimizer and gradients, add metrics, stop the run --------
class GradNormLogger:
    """Logs the global gradient norm of every step's gradients (before clipping) into metrics.jsonl."""

    def __init__(self, config, run_dir):
        self.norms: list[float] = []

    @hookimpl
    def plugformer_before_optimizer_step(self, state: TrainingState) -> None:
        self.norms.append(state.grad_norm())
        state.log_metrics(grad_norm=self.norms[-1])


class EMAWeights:
    """Keeps an exponential moving average of the trained weights (decay 0.5), updated after each step."""

    instances: list[EMAWeights] = []

    def __init__(self, config, run_dir):
        self.ema: dict[str, torch.Tensor] = {}
        self.snapshots: list[dict[str, torch.Tensor]] = []
        EMAWeights.instances.append(self)

    @hookimpl
    def plugformer_train_start(self, state: TrainingState) -> None:
        self.ema = {n: p.detach().clone() for n, p in state.trainable_parameters()}
        self.initial = {n: p.clone() for n, p in self.ema.items()}

    @hookimpl
    def plugformer_after_optimizer_step(self, state: TrainingState) -> None:
        self.snapshots.append({n: p.detach().clone() for n, p in state.trainable_parameters()})
        for name, p in state.trainable_parameters():
            self.ema[name].mul_(0.5).add_(p.detach(), alpha=0.5)


class EarlyStopping:
    """Stops when the validation loss has not improved for ``patience`` evaluations (here: 0, so at the
    first evaluation that is not an improvement; and at once when asked to stop at step 3)."""

    def __init__(self, config, run_dir):
        self.best = float("inf")

    @hookimpl
    def plugformer_evaluate(self, step: int, metrics: dict[str, float], state: TrainingState) -> None:
        if metrics["val_loss"] >= self.best or step >= 3:
            state.request_stop(f"val_loss {metrics['val_loss']:.4f} did not improve on {self.best:.4f}"
                               if metrics["val_loss"] >= self.best else "step 3 reached")
        self.best = min(self.best, metrics["val_loss"])


@pytest.fixture
def callback_host(fake_plugin):
    """The first-party plugins plus a plugin registering the three callbacks above."""
    from importlib.metadata import entry_points

    from plugformer.plugins import LoadSettings, PluginHost

    @hookimpl
    def plugformer_register(registries):
        registries.callback.register("grad_norm", GradNormLogger, description="logs the gradient norm")
        registries.callback.register("ema", EMAWeights, description="EMA of the weights")
        registries.callback.register("early_stop", EarlyStopping, description="stops when val_loss stalls")

    host = PluginHost()
    first_party = [ep for ep in entry_points(group="plugformer") if ep.dist and ep.dist.name == "plugformer"]
    host.load_entry_points([*first_party, fake_plugin("my_callbacks", plugformer_register=plugformer_register)],
                           LoadSettings())
    EMAWeights.instances.clear()
    return host


def _fit(host, tiny_config, tmp_path, callbacks: str, *overrides: str) -> tuple[Trainer, dict, list[dict]]:
    cfg = tiny_config("tokenizer=byte", "data.max_bytes=200000", f"data.cache_dir={tmp_path / 'cache'}",
                      "trainer.batch_size=2", "trainer.eval_batches=1", "trainer.save_every=0", *overrides).copy()
    cfg.trainer.callbacks = callbacks.split(",")
    strategy = build(host.registries, "parallel", cfg.parallel)
    trainer = Trainer(cfg, tmp_path / "run", host, strategy, strategy.setup("cpu"))
    summary = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return trainer, summary, rows


def test_a_grad_norm_callback_logs_into_metrics_jsonl(callback_host, tiny_config, tmp_path):
    trainer, summary, rows = _fit(callback_host, tiny_config, tmp_path, "metrics,grad_norm",
                                  "trainer.max_steps=4", "trainer.log_every=2", "trainer.eval_every=0",
                                  "trainer.grad_clip=0.01")
    logged = [r for r in rows if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 4]
    assert all(r["grad_norm"] > 0.01 for r in logged)  # measured before clipping to 0.01
    assert summary["grad_norm"] == logged[-1]["grad_norm"] and "stop_reason" not in summary


def test_an_ema_callback_reads_the_weights_after_every_step(callback_host, tiny_config, tmp_path):
    trainer, _, _ = _fit(callback_host, tiny_config, tmp_path, "metrics,ema", "trainer.max_steps=3",
                         "trainer.eval_every=0")
    (ema,) = EMAWeights.instances
    assert len(ema.snapshots) == 3
    final = dict(trainer.model.named_parameters())
    for name, average in ema.ema.items():
        assert torch.equal(ema.snapshots[-1][name], final[name])  # the view is the model being trained
        first, second, third = (s[name] for s in ema.snapshots)
        expected = 0.125 * ema.initial[name] + 0.125 * first + 0.25 * second + 0.5 * third
        assert torch.allclose(average, expected, atol=1e-6)
    assert any(not torch.equal(ema.ema[n], final[n]) for n in ema.ema)  # an average, not the last weights


def test_an_early_stopping_callback_ends_the_run_with_a_checkpoint(callback_host, tiny_config, tmp_path):
    trainer, summary, rows = _fit(callback_host, tiny_config, tmp_path, "metrics,early_stop",
                                  "trainer.max_steps=50", "trainer.log_every=5", "trainer.eval_every=1")
    assert trainer.step == summary["step"] <= 3 and summary["stop_reason"]
    assert [r["step"] for r in rows if "val_loss" in r] == list(range(1, trainer.step + 1))
    assert (tmp_path / "run" / "checkpoints" / f"step-{trainer.step}" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stop_reason"] == summary["stop_reason"]


def test_a_callback_metric_may_not_shadow_the_trainers(callback_host, tiny_config, tmp_path):
    class Shadow:
        @hookimpl
        def plugformer_before_optimizer_step(self, state):
            state.log_metrics(loss=0.0)

    callback_host.pm.register(Shadow())
    with pytest.raises(PlugformerError, match="metric.*loss.*other names"):
        _fit(callback_host, tiny_config, tmp_path, "metrics", "trainer.max_steps=1")
