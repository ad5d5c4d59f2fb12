"""Fine-tuning a checkpoint: load its model and tokenizer, serve records as supervised batches, train
with the shared :class:`~plugformer.training.trainer.Trainer` (same loop, hooks, metrics and atomic
checkpoints as ``train``), and score held-out exact match before and after.

The checkpoints it writes are ordinary training checkpoints: their ``config.yaml`` is the starting
checkpoint's (model, tokenizer, components) with this run's objective, optimizer, scheduler, adapter,
data and trainer, plus a ``finetune`` block naming the starting checkpoint and the template.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from plugformer.build import build
from plugformer.checkpoint import (
    check_checkpoint_dir,
    load_config,
    load_model_for_inference,
    trained_adapter,
    write_json,
)
from plugformer.errors import ConfigError
from plugformer.interfaces import ParallelStrategy
from plugformer.plugins import PluginHost
from plugformer.checkpoint.rundir import MetricsLog, check_outside, finite_or_none
from plugformer.training.data import TrainingData, objective_batches
from plugformer.training.pairs import PairData
from plugformer.training.supervised import ChatTemplate, SupervisedData
from plugformer.training.trainer import Trainer, hold_run_dir

#: keys of a finetune config that replace those of the starting checkpoint's config
CARRIED = ("objective", "optimizer", "scheduler", "parallel", "adapter", "quantizer", "data", "trainer",
           "precision", "device", "seed", "resume", "threads")
SUMMARY_FILE = "finetune.json"


def train_config(cfg: DictConfig, base: DictConfig, start: Path) -> DictConfig:
    """The config the trainer runs (and saves): the starting checkpoint's, with this run's choices."""
    out = OmegaConf.to_container(base, resolve=True, enum_to_str=True)
    mine = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in CARRIED:
        out[key] = mine[key]
    out.update(compile=False, launcher={"nproc": 1})
    out["finetune"] = {"checkpoint": str(start), "template": mine["template"], "packing": mine["packing"],
                       "keep_sparsity": mine["keep_sparsity"]}
    return OmegaConf.create(out)


def keep_zeros(model: nn.Module, names: list[str]) -> int:
    """Mask the gradients of the named parameters where they are zero, so a pruned model's zeros stay
    zero under Adam/AdamW/SGD (zero gradients leave zero moments, and decay keeps 0 at 0). Returns the
    number of zeros held fixed."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ConfigError("the checkpoint's pruning record names parameters this model lacks: "
                          f"{', '.join(missing[:3])}")
    fixed = 0
    for name in names:
        p = params[name]
        mask = (p.detach() != 0).to(p.dtype)
        fixed += int(mask.numel() - mask.sum().item())
        p.register_hook(lambda grad, mask=mask: grad * mask)
    return fixed


def run_finetune(cfg: DictConfig, run_dir: Path, host: PluginHost) -> dict[str, Any]:
    """Fine-tune ``cfg.checkpoint`` on ``cfg.data``: records (tasks, JSONL) as supervised batches, plain
    documents (``data=stdlib``, ``data=text``) as token windows (continued pretraining). Returns the
    trainer's summary plus the held-out scores before and after (``loss``, ``perplexity`` and, for
    records, ``exact_match``), also written to ``<run dir>/finetune.json``."""
    registries = host.registries
    start = check_checkpoint_dir(cfg.checkpoint).resolve()
    check_outside(run_dir, start, "starting checkpoint")  # finetune hydra.run.dir=<the base run>
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    base = load_config(start)
    trained_with = trained_adapter(base)
    if trained_with is not None:
        raise ConfigError(f"checkpoint '{start}' was trained with adapter={trained_with}; merge it first "
                          "(plugformer merge) and fine-tune the merged checkpoint")
    template = ChatTemplate.from_config(cfg.template)
    strategy: ParallelStrategy = build(registries, "parallel", cfg.parallel)
    with strategy.running(cfg.device) as device, hold_run_dir(cfg, Path(run_dir), strategy):
        loaded = load_model_for_inference(start, registries, device="cpu")
        model, tokenizer = loaded.model.to(device), loaded.tokenizer
        model.requires_grad_(True)
        max_len = model.dims.max_seq_len
        if cfg.data.seq_len > max_len:
            raise ConfigError(f"data.seq_len={cfg.data.seq_len} exceeds the checkpoint's model.max_seq_len={max_len}; "
                              f"set data.seq_len<={max_len}")
        run_cfg = train_config(cfg, base, start)
        if "reference" in run_cfg.objective and run_cfg.objective.reference is None:
            run_cfg.objective.reference = str(start)  # dpo: the starting model is the reference
        source = build(registries, "data", cfg.data)
        if "pairs" in objective_batches(registries, cfg.objective):  # contrastive: query/positive texts to embed
            data: Any = PairData(source, tokenizer, seq_len=cfg.data.seq_len, batch_size=cfg.trainer.batch_size,
                                 eval_batches=cfg.trainer.eval_batches, seed=cfg.seed, dp_rank=strategy.dp_rank)
        elif getattr(source, "has_records", False):
            data = SupervisedData(source, tokenizer, template, seq_len=cfg.data.seq_len,
                                  batch_size=cfg.trainer.batch_size, eval_batches=cfg.trainer.eval_batches,
                                  seed=cfg.seed, dp_rank=strategy.dp_rank, packing=cfg.packing,
                                  eval_examples=cfg.eval_examples, max_new_tokens=cfg.max_new_tokens)
        else:  # plain documents: continued pretraining on token windows, tokenized by the checkpoint's tokenizer
            data = TrainingData(run_cfg, registries, strategy, resume_from=start)
        pruned = list((base.get("pruning") or {}).get("params", []))
        fixed = keep_zeros(model, pruned) if cfg.keep_sparsity and pruned else 0
        trainer = Trainer(run_cfg, run_dir, host, strategy, device, data=data, model=model)
        before = trainer.evaluate()  # the starting model (an adapter starts as the identity)
        if strategy.is_main and not cfg.resume:
            run_dir.mkdir(parents=True, exist_ok=True)
            MetricsLog(run_dir).start([{"step": 0, **before}])
        summary = trainer.fit()
        result: dict[str, Any] = {"checkpoint": str(start), "steps": summary["step"], "params": trainer.n_params,
                                  "trainable_params": sum(p.numel() for p in trainer.model.parameters()
                                                          if p.requires_grad),
                                  "zeros_kept": fixed}
        for key in ("val_loss", "val_perplexity", "val_exact_match"):
            if key in before:
                result[f"{key[4:]}_before"], result[f"{key[4:]}_after"] = before[key], summary.get(key, math.nan)
        if isinstance(data, SupervisedData):
            result["held_out_records"] = min(len(data.val_records), cfg.eval_examples)
            result["train_records"] = len(data.train_records)
        if strategy.is_main:
            write_json(run_dir / SUMMARY_FILE, finite_or_none(result))  # strict JSON: NaN -> null
    return {**summary, **result}


__all__ = ["keep_zeros", "run_finetune", "train_config"]
