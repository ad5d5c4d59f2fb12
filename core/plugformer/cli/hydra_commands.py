"""The Hydra-driven commands: ``train``, ``generate``, ``validate`` (and :func:`run_hydra`, which
``finetune`` uses too).

Before Hydra runs, plugins are loaded, their schemas stored in ConfigStore, and every combination the
overrides describe is composed once (:mod:`plugformer.config.compose`), so a bad name, key or value is
one clear line (never a traceback from deep inside Hydra, never job k of N failing halfway through a sweep).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugformer.config.compose import (
    CONFIG_MODULE,
    VERSION_BASE,
    compose_checked,
    parse_overrides,
    prepare,
    quote_free_text,
    rename_keys,
    split_args,
    sweep_dirname_excludes,
)
from plugformer.errors import PlugformerError
from plugformer.plugins import PluginHost

#: ``plugformer train -m --strict-sweep ...``: an invalid combination fails the sweep instead of being skipped
STRICT_SWEEP_FLAG = "--strict-sweep"

Task = Callable[[Any, PluginHost], Any]
Check = Callable[[Any, PluginHost], Any]
Handoff = Callable[[list[str], list[Any], bool], "int | None"]


@dataclass
class Plan:
    """What the pre-check decided: the arguments Hydra gets, the configs composed, the sweep plan."""

    args: list[str]
    multirun: bool
    composed: list[Any] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    sweep_plan: Any = None


def _pin_sweep_groups(args: list[str], overrides: list[str]) -> tuple[list[str], list[str]]:
    """(args, overrides) with every swept group's keys pinned to their group (see :func:`sweep.pin_group_keys`)."""
    from plugformer import sweep

    pinned = sweep.pin_group_keys(overrides, parse_overrides)
    return [pinned[overrides.index(a)] if a in overrides else a for a in args], pinned


def _refuse_reused_run_dir(overrides: list[str], cfg: Any) -> None:
    """A run directory named with ``hydra.run.dir`` that already holds a run is refused before Hydra writes
    its own files (``.hydra/``, the job log) into it, so a refused command changes nothing there. Applies to
    the commands whose config has ``resume``/``overwrite`` (train, finetune); ranks other than 0 skip it."""
    from plugformer.checkpoint import resolve_checkpoint
    from plugformer.checkpoint.rundir import check_outside, refuse_reuse

    run_dir = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra.run.dir=")), None)
    if run_dir is None or "resume" not in cfg or "overwrite" not in cfg or int(os.environ.get("RANK", "0")) > 0:
        return
    run_dir = Path(run_dir).expanduser()
    if cfg.get("checkpoint"):  # finetune: never into the run its starting checkpoint belongs to
        check_outside(run_dir, resolve_checkpoint(cfg.checkpoint).resolve(), "starting checkpoint")
    refuse_reuse(run_dir, resume=bool(cfg.resume), overwrite=bool(cfg.overwrite))


def _check_every_combination(command: str, args: list[str], host: PluginHost, check: Check | None) -> Plan:
    """Compose (and ``check``) the config, or every combination of a sweep, before any job runs."""
    from plugformer import sweep

    strict_sweep = STRICT_SWEEP_FLAG in args  # plugformer's own flag: Hydra never sees it
    args = [a for a in args if a != STRICT_SWEEP_FLAG]
    overrides, multirun, informational = split_args(args)
    sweep.check_hydra_plugins(overrides)
    plan = Plan(args, multirun)
    if multirun:
        plan.extra.append("hydra.job.config.override_dirname.exclude_keys="
                          f"[{','.join(sweep_dirname_excludes(overrides))}]")
    if informational:
        return plan

    def checked(combo: list[str]) -> None:
        cfg = compose_checked(command, combo, host)
        if check is not None:
            check(cfg, host)
        plan.composed.append(cfg)

    if not multirun:
        checked(overrides)
        _refuse_reused_run_dir(overrides, plan.composed[-1])
        return plan
    plan.args, overrides = _pin_sweep_groups(args, overrides)
    own_sweeper = not sweep.sweeper_chosen(plan.args)  # another one (optuna) cannot skip a combination
    strict = (STRICT_SWEEP_FLAG if strict_sweep else "" if own_sweeper else
              "the chosen hydra/sweeper cannot skip combinations")
    sweep_plan = sweep.plan_sweep(sweep.expand(overrides, parse_overrides), checked, strict,
                                  lambda line: print(line, file=sys.stderr))
    if own_sweeper:
        plan.sweep_plan = sweep_plan
        plan.extra.append(f"hydra/sweeper={sweep.SWEEPER_NAME}")
    return plan


class _Outcome:
    """What the jobs Hydra ran reported: failed sweep jobs, or the error of a single run."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.error: PlugformerError | OSError | None = None

    def job(self, task: Task) -> Callable[[Any], Any]:
        """``task`` as a Hydra job: a PlugformerError fails a sweep job (recorded) or the single run."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from plugformer import sweep

        def run(cfg: Any) -> Any:
            # prepare() again: a launcher may run this job in a worker process (joblib) that loads plugins itself
            multirun_job = HydraConfig.get().mode == RunMode.MULTIRUN
            output_dir = Path(HydraConfig.get().runtime.output_dir)
            try:
                result = task(cfg, prepare())
            except (PlugformerError, OSError) as exc:  # an OSError: an unwritable run directory, a full disk
                if not multirun_job:
                    self.error = exc  # re-raised outside Hydra, so it prints as one line
                    return None
                sweep.write_failure(output_dir, str(exc))
                self.failures.append(f"{HydraConfig.get().job.override_dirname}: {exc}")
                print(f"plugformer: job failed: {exc}", file=sys.stderr)
                return None
            if multirun_job:
                sweep.clear_failure(output_dir)
            return result

        return run


def _run_under_hydra(command: str, plan: Plan, task: Task) -> _Outcome:
    """Hand over to ``hydra.main`` (run directory, sweeper, launcher, logging) with ``task`` as the job."""
    import hydra

    from plugformer import sweep

    outcome = _Outcome()
    main = hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=command,
                      version_base=VERSION_BASE)(outcome.job(task))
    saved, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [f"plugformer-{command}", *plan.args, *plan.extra]
    # Hydra re-raises what fails around a job (an unwritable run directory) instead of printing a traceback
    # and exiting: plugformer's main turns it into one line
    os.environ["HYDRA_FULL_ERROR"] = "1"
    if plan.sweep_plan is not None:
        sweep.register_sweeper()
        sweep.set_active_plan(plan.sweep_plan)
    try:
        main()
    finally:
        sys.argv = saved
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
        sweep.set_active_plan(None)
    return outcome


def _raise_failures(plan: Plan, outcome: _Outcome) -> None:
    """One line for a failed single run, or for every failed job of a sweep."""
    if outcome.error is not None:
        raise outcome.error
    failures = outcome.failures
    if plan.sweep_plan is not None and plan.sweep_plan.outcomes:  # the sweeper saw every job, here or in workers
        failures = plan.sweep_plan.failures()
    if failures:
        raise PlugformerError(f"{len(failures)} sweep job(s) failed: " + " | ".join(failures))


def run_hydra(command: str, args: list[str], task: Task, extra: list[str] | None = None,
              check: Check | None = None, handoff: Handoff | None = None) -> int:
    """Compose (and ``check``) every combination, then hand over to ``hydra.main`` with ``task`` as the job.
    ``handoff(args, composed configs, multirun)`` may run the command some other way (the launcher) and
    return its exit status instead."""
    host = prepare()
    plan = _check_every_combination(command, args, host, check)
    plan.extra = [*(extra or []), *plan.extra]
    if handoff is not None and plan.composed:
        status = handoff(plan.args, plan.composed, plan.multirun)
        if status is not None:
            return status
    _raise_failures(plan, _run_under_hydra(command, plan, task))
    return 0


# -- the commands ---------------------------------------------------------------------------------
def _check_train(cfg: Any, host: PluginHost) -> None:
    from plugformer.cli.launcher import nproc_problem
    from plugformer.config.validate import validate_train
    from plugformer.errors import ConfigError
    from plugformer.model.transforms import activation_checkpointing_problem

    entries = validate_train(cfg, host.registries)
    problems = [nproc_problem(cfg, entries["parallel"], host.registries), activation_checkpointing_problem(cfg)]
    if cfg.get("compile", False):
        from plugformer.interfaces.parallel import resolve_device
        from plugformer.model.transforms import compile_problem

        problems.append(compile_problem(cfg.compile_backend, resolve_device(cfg.device).split(":")[0]))
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def _train_job(cfg: Any, host: PluginHost) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from plugformer.cli.launcher import under_torchrun
    from plugformer.training import run_training

    if cfg.launcher.nproc > 1 and not under_torchrun():
        from plugformer.cli.launcher import launch_sweep_job

        hc = HydraConfig.get()
        user_configs = any(s.provider == "command-line" for s in hc.runtime.config_sources)
        if hc.mode != RunMode.MULTIRUN or user_configs:  # the CLI's pre-check was skipped (--config-dir ...)
            raise PlugformerError(f"launcher.nproc={cfg.launcher.nproc} could not be launched here: the launcher "
                                  "does not see configs from --config-dir/--config-path yet; set launcher.nproc on "
                                  "the command line, or start the ranks with torchrun --standalone --nproc_per_node=N")
        # a sweep job: it starts its own ranks in its own job directory
        summary = launch_sweep_job(cfg.launcher.nproc, list(hc.overrides.task), hc.runtime.output_dir)
    else:
        summary = run_training(cfg, HydraConfig.get().runtime.output_dir, host)
    # a sweeper that optimises (hydra/sweeper=optuna) minimises what the job returns: the final val loss
    return float(summary["val_loss"]) if summary and "val_loss" in summary else None


def train(args: list[str]) -> int:
    from plugformer.cli.launcher import maybe_launch

    local_rank = [a for a in args if a.split("=")[0] in ("--local_rank", "--local-rank")]
    if local_rank:
        raise PlugformerError(f"plugformer takes no {local_rank[0].split('=')[0]}: each rank reads LOCAL_RANK from "
                              "the environment (use torchrun, or launcher.nproc=N, not torch.distributed.launch)")
    extra = []
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: only rank 0 writes Hydra's files and log
        extra = ["hydra.output_subdir=null", "hydra/job_logging=none", "hydra/hydra_logging=none"]
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and \
            not any(a.startswith("hydra.run.dir=") for a in args) and "-m" not in args:
        raise PlugformerError("under torchrun pass hydra.run.dir=DIR so that all ranks share one run directory")
    return run_hydra("train", args, _train_job, extra, check=_check_train, handoff=maybe_launch)


def _check_generate(cfg: Any, host: PluginHost) -> None:
    from plugformer.checkpoint import check_checkpoint_dir

    check_checkpoint_dir(cfg.checkpoint)


def _generate_job(cfg: Any, host: PluginHost) -> None:
    from plugformer.cli.generate_job import run_generate

    run_generate(cfg, host.registries)


def generate(args: list[str]) -> int:
    args = rename_keys(quote_free_text(args, ("prompt",)), {"adapter": "adapter_dir"})
    return run_hydra("generate", args, _generate_job, check=_check_generate)


def _validate_job(cfg: Any, host: PluginHost) -> None:
    from plugformer.config.validate import validate_train

    entries = validate_train(cfg, host.registries)  # every component group and each chosen optional one
    chosen = " ".join(f"{g}={cfg[g].name}" for g in entries)
    m = cfg.model
    print(f"config OK: {chosen} | model {m.n_layers}x{m.d_model} heads={m.n_heads} "
          f"seq_len={cfg.data.seq_len} precision={cfg.precision.value} device={cfg.device}")
    for family, entry in entries.items():
        print(f"  {family:<10} {entry.name:<12} {entry.provided_by}")


def validate(args: list[str]) -> int:
    return run_hydra("validate", args, _validate_job)
