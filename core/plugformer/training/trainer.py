"""Trains a model a config describes: data → model → transforms → optimizer → loop → checkpoints.

Exact resume: the batch of step ``s`` and the dropout RNG of step ``s`` depend only on (seed, s, rank),
and checkpoints hold model, optimizer, scheduler and step, so a run stopped at step N and resumed
reproduces the uninterrupted run's losses.
"""
from __future__ import annotations

import contextlib
import math
import resource
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from plugformer.build import build
from plugformer.checkpoint import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    PLUGINS_FILE,
    SUMMARY_FILE,
    TOKENIZER_DIR,
    TRAINER_STATE,
    CheckpointDir,
    load_state,
    save_state,
    write_json,
)
from plugformer.config.validate import validate_train
from plugformer.errors import ConfigError, PlugformerError
from plugformer.interfaces import Batches, ParallelStrategy
from plugformer.model import apply_transforms, build_model
from plugformer.model.transforms import config_transforms
from plugformer.plugins import PluginHost
from plugformer.precision import autocast
from plugformer.run import RunInfo, TrainingState
from plugformer.checkpoint.rundir import claim_run_dir, finite_or_none, last_checkpoint, resume_checkpoint
from plugformer.training.data import training_data
from plugformer.training.nonfinite import NonFiniteGuard
from plugformer.training.retrieval_eval import HeldOutRetrieval


def run_training(cfg: DictConfig, run_dir: Path, host: PluginHost) -> dict[str, Any]:
    """Validate ``cfg`` (before any process group starts), then train inside the parallel strategy."""
    validate_train(cfg, host.registries)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    strategy: ParallelStrategy = build(host.registries, "parallel", cfg.parallel)
    with strategy.running(cfg.device) as device, hold_run_dir(cfg, Path(run_dir), strategy):
        return Trainer(cfg, Path(run_dir), host, strategy, device).fit()


def hold_run_dir(cfg: DictConfig, run_dir: Path, strategy: ParallelStrategy) -> contextlib.AbstractContextManager[None]:
    """Hold ``run_dir`` for this run (rank 0): locked against a second process, a previous run in it
    refused unless ``resume=true`` or ``overwrite=true`` (see :mod:`plugformer.checkpoint.rundir`)."""
    return claim_run_dir(run_dir, resume=bool(cfg.resume), overwrite=bool(cfg.get("overwrite", False)),
                         main=strategy.is_main)


#: the key of the objective's own parameters (:meth:`plugformer.interfaces.Objective.trainable_module`) in the
#: training state
OBJECTIVE_STATE_KEY = "objective"


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + rank) % (2**63)


class Trainer:
    """One training run. Built pieces are plain attributes; :meth:`fit` runs the loop."""

    def __init__(self, cfg: DictConfig, run_dir: Path, host: PluginHost, strategy: ParallelStrategy,
                 device: torch.device, data: Batches | None = None, model: torch.nn.Module | None = None):
        """``data`` and ``model`` replace what ``cfg`` would build (fine-tuning passes records data, see
        :class:`plugformer.training.supervised.SupervisedData`, and a model loaded from a checkpoint)."""
        self.cfg, self.run_dir, self.host, self.strategy, self.device = cfg, run_dir, host, strategy, device
        registries = host.registries
        t = cfg.trainer
        if t.batch_size % (strategy.dp_size * t.grad_accum):
            raise ConfigError(f"trainer.batch_size={t.batch_size} must be divisible by data-parallel ranks "
                              f"({strategy.dp_size}) × trainer.grad_accum ({t.grad_accum})")
        self.rows_per_rank = t.batch_size // strategy.dp_size
        self.ckpts = CheckpointDir(run_dir / CHECKPOINTS_DIR, t.keep_last)
        resume_from = resume_checkpoint(run_dir, quiet=not strategy.is_main) if cfg.resume else None
        self.data: Batches = data if data is not None else training_data(cfg, registries, strategy, resume_from)
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
        self.objective = build(registries, "objective", cfg.objective, self.tokenizer)
        self.objective_module = self._objective_module(cfg, strategy, device)
        self.optimizer = build(registries, "optimizer", cfg.optimizer, self.model)
        if self.objective_module is not None:  # its own group, before the scheduler takes the groups' lrs
            self.optimizer.add_param_group({"params": [p for p in self.objective_module.parameters()
                                                       if p.requires_grad], "weight_decay": 0.0})
        self.scheduler = build(registries, "scheduler", cfg.scheduler, self.optimizer, t.max_steps)
        # an engine owning backward and step (DeepSpeed) takes the model and optimizer here; the scheduler
        # keeps driving the learning rate of the optimizer's param groups
        self.model, self.optimizer = strategy.prepare(self.model, self.optimizer, batch_size=t.batch_size,
                                                      grad_accum=t.grad_accum, grad_clip=t.grad_clip)
        # retriever=...: the final evaluation also measures the model as a retrieval embedder (checked now)
        self.retrieval = HeldOutRetrieval.from_config(cfg, registries, getattr(self.data, "source", None),
                                                      strategy.world_size)
        if strategy.is_main:
            self._warn(resume_from)
        self.step = self._restore(resume_from) if resume_from else 0
        self.nonfinite = NonFiniteGuard(t.get("on_nonfinite", "stop"), strategy, device,
                                         lambda: last_checkpoint(run_dir))
        self._metric_sums: dict[str, torch.Tensor] = {}  # objective metrics since the last log step
        self.run = RunInfo(run_dir, OmegaConf.to_container(cfg, resolve=True), t.max_steps, self.step,
                           t.batch_size * cfg.data.seq_len, strategy.rank, strategy.world_size)
        self.state = TrainingState(strategy.unwrap(self.model), self.optimizer, self.scheduler)  # what hooks see

    def _objective_module(self, cfg: DictConfig, strategy: ParallelStrategy,
                          device: torch.device) -> torch.nn.Module | None:
        """The objective's own trainable parameters (:meth:`plugformer.interfaces.Objective.trainable_module`), on
        ``device``; refused in one line under a parallel strategy other than ``single``, which would not keep them
        in step across processes."""
        module = self.objective.trainable_module()
        if module is None:
            return None
        parallel = str(cfg.parallel.name)
        if parallel != "single" or strategy.world_size > 1:
            option = self.objective.parameters_option
            what = f"objective.{option}=true" if option else f"objective '{cfg.objective.name}'"
            off = f" or objective.{option}=false" if option else ""
            raise ConfigError(f"{what} trains parameters outside the model, which parallel={parallel} does not keep "
                              f"in step across processes: use parallel=single{off}")
        return module.to(device)

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
            hook.plugformer_train_start(run=self.run, state=self.state)
            summary = self._loop(hook)
            hook.plugformer_train_end(run=self.run, metrics=summary, state=self.state)
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
            stop = self._stop_requested()  # a callback's request_stop makes this step the last
            final = self.step == t.max_steps or stop
            self._check_finite(final)
            if self.step % t.log_every == 0 or final or self.step == 1:
                now = time.perf_counter()
                steps = self.step - last_logged
                loss = self.strategy.reduce_mean(loss_sum / steps).item()
                metrics = {"loss": loss, "lr": self.scheduler.get_last_lr()[0],
                           "tokens_per_s": steps * self.run.tokens_per_step / max(now - last_time, 1e-9),
                           "tokens": self.step * self.run.tokens_per_step,
                           **{k: self.strategy.reduce_mean(v / steps).item() for k, v in self._metric_sums.items()}}
                metrics.update(self._callback_metrics(metrics))
                self._metric_sums = {}
                hook.plugformer_step_end(run=self.run, step=self.step, metrics=metrics, state=self.state)
                stop = stop or self._stop_requested()
                loss_sum.zero_()
                last_time, last_logged = time.perf_counter(), self.step
            if (t.eval_every and self.step % t.eval_every == 0) or final or stop:
                eval_metrics = self.evaluate()
                if (final or stop) and self.retrieval is not None:  # the run's last evaluation
                    eval_metrics.update(self.retrieval.scores(self.strategy.unwrap(self.model), self.tokenizer,
                                                              self.cfg, str(self.device), self.run_dir))
                hook.plugformer_evaluate(run=self.run, step=self.step, metrics=eval_metrics, state=self.state)
                stop = stop or self._stop_requested()
            if (t.save_every and self.step % t.save_every == 0) or final or stop:
                self.save()  # plugformer_checkpoint_saved fires once it is committed (see _commit)
            if stop:
                break
        self.strategy.wait_for_save()  # an asynchronous save still writing commits before the summary
        wall = time.perf_counter() - start_time
        summary = {"step": self.step, **metrics, **eval_metrics, "params": self.n_params,
                   "trainable_params": self.n_trainable, "wall_s": wall,
                   "tokens_per_s_mean": (self.step - start_step) * self.run.tokens_per_step / max(wall, 1e-9),
                   "peak_memory_mb": self._peak_memory_mb()}
        summary.pop("tokens_per_s", None)
        if self.state.stop_reason is not None:
            summary["stop_reason"] = self.state.stop_reason
        if self.strategy.is_main:
            write_json(self.run_dir / SUMMARY_FILE, finite_or_none(summary))  # strict JSON: NaN -> null
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
        self.host.hook.plugformer_before_optimizer_step(run=self.run, step=self.step, state=self.state)
        if self.nonfinite.allow_update(self.step, total, self.model):  # trainer.on_nonfinite
            self.strategy.optimizer_step(self.model, self.optimizer, t.grad_clip)  # clip, step, zero the grads
        else:
            self.optimizer.zero_grad(set_to_none=True)  # a skipped step: its gradients are dropped
        self.scheduler.step()
        self.host.hook.plugformer_after_optimizer_step(run=self.run, step=self.step, state=self.state)
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
        val.update({f"val_{k}": v for k, v in self.data.evaluate(self.model).items()})  # e.g. exact match
        return {**val, "val_perplexity": math.exp(min(val["val_loss"], 50.0))}

    def _check_finite(self, final: bool) -> None:
        """``trainer.on_nonfinite=stop``: stop on a non-finite loss at the steps that synchronise anyway
        (logging, evaluation, saving, the last), so the check costs no extra synchronisation per step."""
        t, s = self.cfg.trainer, self.step
        if final or s == 1 or s % t.log_every == 0 or any(every and s % every == 0
                                                          for every in (t.eval_every, t.save_every)):
            self.nonfinite.check()

    # -- checkpoints ------------------------------------------------------------------------------
    def save(self) -> Path:
        """Write ``checkpoints/step-N`` atomically through the strategy and point ``last`` at it. A strategy
        saving asynchronously commits it (rename, ``last``) once its writes are done: at its next save or
        the end of training, so a crash before then keeps the previous checkpoint."""
        self.nonfinite.check_weights(self.model, self.step)  # a non-finite checkpoint is never written
        self.strategy.wait_for_save()
        main = self.strategy.is_main
        if main:
            self.ckpts.begin(self.step)
        self.strategy.barrier()
        tmp = self.ckpts.tmp_dir(self.step)
        self.strategy.save(tmp, self.model, self.optimizer)
        if main:
            state = {"step": self.step, "seed": self.cfg.seed, "scheduler": self.scheduler.state_dict(),
                     "torch_rng": torch.get_rng_state()}
            if self.objective_module is not None:  # a learned temperature, ...: training state, not the model's
                state[OBJECTIVE_STATE_KEY] = dict(self.objective_module.state_dict())
            save_state(tmp, TRAINER_STATE, state)
            (tmp / CONFIG_FILE).write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
            write_json(tmp / PLUGINS_FILE, self.host.manifest())
            (tmp / TOKENIZER_DIR).mkdir()
            self.tokenizer.save(tmp / TOKENIZER_DIR)
        for transform in self.transforms:  # an adapter's own files, inside tmp (still atomic); every rank
            transform.save_artifacts(tmp)  # calls it (sharded weights are gathered), the main rank writes
        step = self.step
        self.strategy.after_save(lambda: self._commit(step))
        return self.ckpts.step_dir(step)

    def _commit(self, step: int) -> None:
        self.strategy.barrier()
        final = self.ckpts.commit(step) if self.strategy.is_main else self.ckpts.step_dir(step)
        self.strategy.barrier()
        self.host.hook.plugformer_checkpoint_saved(run=self.run, step=step, path=final, state=self.state)

    def _warn(self, resume_from: Path | None) -> None:
        """One ``plugformer: warning:`` line per legal but suspicious setting (a warmup longer than the run, an
        optimizer.lr the resumed checkpoint overrides)."""
        from plugformer.checkpoint import load_config
        from plugformer.checkpoint.rundir import warn
        from plugformer.config.validate import config_warnings, resume_warnings

        lines = config_warnings(self.cfg)
        if resume_from is not None and (resume_from / CONFIG_FILE).is_file():
            lines += resume_warnings(load_config(resume_from), self.cfg)
        for line in lines:
            warn(line)

    def _restore(self, directory: Path) -> int:
        state = load_state(directory, TRAINER_STATE)
        saved = state.get(OBJECTIVE_STATE_KEY)
        if (saved is None) != (self.objective_module is None):  # before the optimizer's groups fail to match
            has = "has no" if saved is None else "has"
            option = self.objective.parameters_option
            differs = f"objective.{option} differs" if option else "another objective"
            raise ConfigError(f"cannot resume from {directory}: it {has} objective parameters of its own ({differs}); "
                              "resume with the config it was trained with")
        self.strategy.load(directory, self.model, self.optimizer)
        if self.objective_module is not None:
            self.objective_module.load_state_dict({k: v.to(self.device) for k, v in saved.items()})
        sched = state["scheduler"]
        if "lr_lambdas" in sched:  # keep this run's schedule objects (e.g. a raised max_steps)
            sched["lr_lambdas"] = [None] * len(sched["lr_lambdas"])
        self.scheduler.load_state_dict(sched)
        torch.set_rng_state(state["torch_rng"])
        return int(state["step"])

    # -- callbacks' requests ----------------------------------------------------------------------
    def _callback_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """What callbacks added with ``state.log_metrics`` since the last logging step."""
        extra = self.state.take_metrics()
        clash = sorted(extra.keys() & metrics.keys())
        if clash:
            raise PlugformerError(f"a callback logged metric(s) {', '.join(clash)}, which the trainer reports "
                                  "itself; give the callback's metrics other names")
        return extra

    def _stop_requested(self) -> bool:
        """Whether a callback asked to stop (on any rank: every rank then stops at the same step)."""
        asked = self.state.stop_reason is not None
        if self.strategy.world_size > 1:
            flag = torch.tensor(float(asked), device=self.device)
            asked = bool(self.strategy.reduce_mean(flag).item() > 0)
        return asked

    # -- bookkeeping ------------------------------------------------------------------------------
    def _write_run_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        write_json(self.run_dir / PLUGINS_FILE, self.host.manifest())

    def _peak_memory_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


__all__ = ["Trainer", "run_training"]
