"""Trains a model a config describes: data → model → transforms → optimizer → loop → checkpoints.

Exact resume: the batch of step ``s`` and the dropout RNG of step ``s`` depend only on (seed, s, rank),
and checkpoints hold model, optimizer, scheduler and step, so a run stopped at step N and resumed
reproduces the uninterrupted run's losses.
"""
from __future__ import annotations

import contextlib
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from plugformer.build import build
from plugformer.checkpoint import CheckpointDir, load_state, save_state, write_json
from plugformer.config.validate import validate_train
from plugformer.errors import ConfigError
from plugformer.interfaces import ParallelStrategy
from plugformer.model import apply_transforms, build_model
from plugformer.model.transforms import config_transforms
from plugformer.plugins import PluginHost
from plugformer.precision import autocast
from plugformer.run import RunInfo
from plugformer.training.data import TrainingData


def run_training(cfg: DictConfig, run_dir: Path, host: PluginHost) -> dict[str, Any]:
    """Validate ``cfg`` (before any process group starts), then train inside the parallel strategy."""
    validate_train(cfg, host.registries)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    strategy: ParallelStrategy = build(host.registries, "parallel", cfg.parallel)
    with strategy.running(cfg.device) as device:
        return Trainer(cfg, Path(run_dir), host, strategy, device).fit()


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + rank) % (2**63)


class Trainer:
    """One training run. Built pieces are plain attributes; :meth:`fit` runs the loop."""

    def __init__(self, cfg: DictConfig, run_dir: Path, host: PluginHost, strategy: ParallelStrategy,
                 device: torch.device, data: Any = None, model: torch.nn.Module | None = None):
        """``data`` and ``model`` replace what ``cfg`` would build (fine-tuning passes records data, see
        :class:`plugformer.training.supervised.SupervisedData`, and a model loaded from a checkpoint)."""
        self.cfg, self.run_dir, self.host, self.strategy, self.device = cfg, run_dir, host, strategy, device
        registries = host.registries
        t = cfg.trainer
        if t.batch_size % (strategy.dp_size * t.grad_accum):
            raise ConfigError(f"trainer.batch_size={t.batch_size} must be divisible by data-parallel ranks "
                              f"({strategy.dp_size}) × trainer.grad_accum ({t.grad_accum})")
        self.rows_per_rank = t.batch_size // strategy.dp_size
        self.ckpts = CheckpointDir(run_dir / "checkpoints", t.keep_last)
        resume_from = self.ckpts.last if cfg.resume else None
        self.data = data if data is not None else TrainingData(cfg, registries, strategy, resume_from)
        self.tokenizer = self.data.tokenizer
        torch.manual_seed(cfg.seed)
        model = (model if model is not None else build_model(cfg, registries, self.tokenizer.vocab_size)).to(device)
        self.n_params = sum(p.numel() for p in model.parameters())
        # the config's transforms (activation checkpointing, compile) and the strategy's (TP, DDP/FSDP
        # wrappers), ordered by stage; the optimizer is built after, over the transformed parameters
        self.transforms = [*config_transforms(cfg, registries), *strategy.transforms()]
        self.model = apply_transforms(model, self.transforms)
        # an adapter freezes the base: the optimizer (and the summary) count only what trains
        self.n_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.optimizer = build(registries, "optimizer", cfg.optimizer, self.model)
        self.scheduler = build(registries, "scheduler", cfg.scheduler, self.optimizer, t.max_steps)
        # an engine owning backward and step (DeepSpeed) takes the model and optimizer here; the scheduler
        # keeps driving the learning rate of the optimizer's param groups
        self.model, self.optimizer = strategy.prepare(self.model, self.optimizer, batch_size=t.batch_size,
                                                      grad_accum=t.grad_accum, grad_clip=t.grad_clip)
        self.objective = build(registries, "objective", cfg.objective, self.tokenizer)
        if strategy.is_main:
            self._warn(resume_from)
        self.step = self._restore(resume_from) if resume_from else 0
        self._metric_sums: dict[str, torch.Tensor] = {}  # objective metrics since the last log step
        self.run = RunInfo(run_dir, OmegaConf.to_container(cfg, resolve=True), t.max_steps, self.step,
                           t.batch_size * cfg.data.seq_len, strategy.rank, strategy.world_size)

    # -- the loop -------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        t, hook = self.cfg.trainer, self.host.hook
        callbacks = [build(self.host.registries, "callback", name, self.run_dir) for name in t.callbacks]
        for cb in callbacks:
            self.host.pm.register(cb)
            self.host.check_hooks(cb)
        try:
            if self.strategy.is_main:
                self._write_run_files()
            hook.plugformer_train_start(run=self.run)
            summary = self._loop(hook)
            hook.plugformer_train_end(run=self.run, metrics=summary)
        finally:
            for cb in callbacks:
                self.host.pm.unregister(cb)
        return summary

    def _loop(self, hook: Any) -> dict[str, Any]:
        t = self.cfg.trainer
        start_time = last_time = time.perf_counter()
        start_step, last_logged = self.step, self.step
        loss_sum = torch.zeros((), device=self.device)
        metrics: dict[str, float] = {}
        eval_metrics: dict[str, float] = {}
        while self.step < t.max_steps:
            self.step += 1
            loss_sum += self.train_step()
            final = self.step == t.max_steps
            if self.step % t.log_every == 0 or final or self.step == 1:
                now = time.perf_counter()
                steps = self.step - last_logged
                loss = self.strategy.reduce_mean(loss_sum / steps).item()
                metrics = {"loss": loss, "lr": self.scheduler.get_last_lr()[0],
                           "tokens_per_s": steps * self.run.tokens_per_step / max(now - last_time, 1e-9),
                           "tokens": self.step * self.run.tokens_per_step,
                           **{k: self.strategy.reduce_mean(v / steps).item() for k, v in self._metric_sums.items()}}
                self._metric_sums = {}
                hook.plugformer_step_end(run=self.run, step=self.step, metrics=metrics)
                loss_sum.zero_()
                last_time, last_logged = time.perf_counter(), self.step
            if (t.eval_every and self.step % t.eval_every == 0) or final:
                eval_metrics = self.evaluate()
                hook.plugformer_evaluate(run=self.run, step=self.step, metrics=eval_metrics)
            if (t.save_every and self.step % t.save_every == 0) or final:
                self.save()  # plugformer_checkpoint_saved fires once it is committed (see _commit)
        self.strategy.wait_for_save()  # an asynchronous save still writing commits before the summary
        wall = time.perf_counter() - start_time
        summary = {"step": self.step, **metrics, **eval_metrics, "params": self.n_params,
                   "trainable_params": self.n_trainable, "wall_s": wall,
                   "tokens_per_s_mean": (self.step - start_step) * self.run.tokens_per_step / max(wall, 1e-9),
                   "peak_memory_mb": self._peak_memory_mb()}
        summary.pop("tokens_per_s", None)
        if self.strategy.is_main:
            write_json(self.run_dir / "summary.json", summary)
        return summary

    def train_step(self) -> torch.Tensor:
        """One optimizer step over this rank's share of the global batch; returns the detached loss."""
        t = self.cfg.trainer
        # per replica, not per rank: the tensor-parallel ranks of one replica draw the same dropout masks
        torch.manual_seed(step_seed(self.cfg.seed, self.step, self.strategy.dp_rank))
        batch = self.data.train_batch(self.step, self.rows_per_rank).to(self.device, non_blocking=True)
        self.model.train()
        total = torch.zeros((), device=self.device)
        micro_batches = batch.chunk(t.grad_accum)
        for i, micro in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1
            with contextlib.nullcontext() if sync else self.strategy.no_sync(self.model):
                with autocast(self.device, self.cfg.precision):
                    out = self.objective(self.model, micro)
                    loss = out.loss / len(micro_batches)
                self.strategy.backward(loss, self.model)
            total += loss.detach()
            for name, value in out.metrics.items():
                share = value.detach().float() / len(micro_batches)
                self._metric_sums[name] = self._metric_sums.get(name, 0.0) + share
        self.strategy.optimizer_step(self.model, self.optimizer, t.grad_clip)  # clip, step, zero the grads
        self.scheduler.step()
        return total

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over the fixed validation windows (each rank takes its rows of every batch)."""
        self.model.eval()
        sums: dict[str, torch.Tensor] = {"loss": torch.zeros((), device=self.device)}
        count = 0
        for batch in self.data.val_batches(self.rows_per_rank):
            with autocast(self.device, self.cfg.precision):
                out = self.objective(self.model, batch.to(self.device))
            for name, value in {"loss": out.loss, **out.metrics}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            count += 1
        val = {f"val_{k}": self.strategy.reduce_mean(v / max(count, 1)).item() for k, v in sums.items()}
        if hasattr(self.data, "evaluate"):  # data-specific scores (records: held-out exact match)
            val.update({f"val_{k}": v for k, v in self.data.evaluate(self.model).items()})
        return {**val, "val_perplexity": math.exp(min(val["val_loss"], 50.0))}

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write ``checkpoints/step-N`` atomically through the strategy and point ``last`` at it. A strategy
        saving asynchronously commits it (rename, ``last``) once its writes are done: at its next save or
        the end of training, so a crash before then keeps the previous checkpoint."""
        self.strategy.wait_for_save()
        main = self.strategy.is_main
        if main:
            self.ckpts.begin(self.step)
        self.strategy.barrier()
        tmp = self.ckpts.tmp_dir(self.step)
        self.strategy.save(tmp, self.model, self.optimizer)
        if main:
            save_state(tmp, "trainer_state", {"step": self.step, "seed": self.cfg.seed,
                                              "scheduler": self.scheduler.state_dict(),
                                              "torch_rng": torch.get_rng_state()})
            (tmp / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
            write_json(tmp / "plugins.json", self.host.manifest())
            (tmp / "tokenizer").mkdir()
            self.tokenizer.save(tmp / "tokenizer")
        for transform in self.transforms:  # an adapter's own files, inside tmp (still atomic); every rank
            transform.save_artifacts(tmp)  # calls it (sharded weights are gathered), the main rank writes
        step = self.step
        self.strategy.after_save(lambda: self._commit(step))
        return self.ckpts.step_dir(step)

    def _commit(self, step: int) -> None:
        self.strategy.barrier()
        final = self.ckpts.commit(step) if self.strategy.is_main else self.ckpts.step_dir(step)
        self.strategy.barrier()
        self.host.hook.plugformer_checkpoint_saved(run=self.run, step=step, path=final)

    def _warn(self, resume_from: Path | None) -> None:
        """One ``plugformer: warning:`` line per legal but suspicious setting (a warmup longer than the run, an
        optimizer.lr the resumed checkpoint overrides)."""
        from plugformer.config.validate import config_warnings, resume_warnings

        lines = config_warnings(self.cfg)
        if resume_from is not None and (resume_from / "config.yaml").is_file():
            lines += resume_warnings(OmegaConf.load(resume_from / "config.yaml"), self.cfg)
        for line in lines:
            print(f"plugformer: warning: {line}", file=sys.stderr)

    def _restore(self, directory: Path) -> int:
        self.strategy.load(directory, self.model, self.optimizer)
        state = load_state(directory, "trainer_state")
        sched = state["scheduler"]
        if "lr_lambdas" in sched:  # keep this run's schedule objects (e.g. a raised max_steps)
            sched["lr_lambdas"] = [None] * len(sched["lr_lambdas"])
        self.scheduler.load_state_dict(sched)
        torch.set_rng_state(state["torch_rng"])
        return int(state["step"])

    # -- bookkeeping ------------------------------------------------------------------------------
    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        write_json(self.run_dir / "plugins.json", self.host.manifest())

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


__all__ = ["Trainer", "run_training"]
