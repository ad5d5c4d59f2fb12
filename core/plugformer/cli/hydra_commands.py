"""The Hydra-driven commands: ``train``, ``generate``, ``validate``.

Before Hydra runs, plugins are loaded, their schemas stored in ConfigStore, and every combination the
overrides describe is composed once, so a bad name, key or value is one clear line (never a traceback
from deep inside Hydra, never job k of N failing halfway through a sweep).
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugformer.errors import PlugformerError
from plugformer.plugins import PluginHost, load_plugins

CONFIG_MODULE = "plugformer.conf"
VERSION_BASE = "1.3"
#: ``plugformer train -m --strict-sweep ...``: an invalid combination fails the sweep instead of being skipped
STRICT_SWEEP_FLAG = "--strict-sweep"
_HYDRA_FLAGS_WITH_VALUE = {"--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
                           "--experimental-rerun", "--info", "-i", "--package", "-p", "--cfg", "-c"}


def prepare() -> PluginHost:
    """Load plugins and make their configs visible to Hydra (idempotent)."""
    from plugformer.config.searchpath import register_search_path_plugin
    from plugformer.config.store import store_component_configs

    host = load_plugins()
    store_component_configs(host.registries)
    register_search_path_plugin()
    return host


def split_args(args: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun?, only-a-hydra-flag such as --help/--cfg?)"""
    overrides, multirun, informational, skip = [], False, False, False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-m", "--multirun"):
            multirun = True
        elif a.startswith("-"):
            # informational flags, and user config dirs the pre-check cannot see: Hydra handles those
            informational |= a in ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c",
                                   "--shell-completion", "-sc", "--config-dir", "-cd", "--config-path", "-cp")
            skip = a in _HYDRA_FLAGS_WITH_VALUE and a not in ("--info", "-i")
        else:
            overrides.append(a)
    return overrides, multirun, informational


def quote_free_text(args: list[str], keys: tuple[str, ...]) -> list[str]:
    """Quote the values of free-text keys (``prompt=def main(``) for Hydra's override grammar, so a
    prompt needs no extra shell quoting. Values the user already quoted are left alone."""
    out = []
    for a in args:
        key, eq, value = a.partition("=")
        if eq and key in keys and not (len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""):
            escaped = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, value).replace("'", "\\'")
            a = f"{key}='{escaped}'"
        out.append(a)
    return out


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise PlugformerError(f"cannot parse overrides: {str(exc).splitlines()[0]}") from None


def sweep_dirname_excludes(overrides: list[str]) -> list[str]:
    """Keys left out of a sweep job's directory name: every key that is not swept (and hydra's own),
    so job directories are named by what varies, and re-running a sweep finds the same directories."""
    return sorted({o.key_or_group for o in _parse(overrides) if not o.is_sweep_override()} |
                  {"resume", "device", "threads", "hydra.run.dir", "hydra.sweep.dir"})


def _combinations(overrides: list[str], multirun: bool) -> list[list[str]]:
    from plugformer.sweep import expand

    if not multirun:
        return [overrides]
    return [c.overrides for c in expand(overrides, _parse)]


def compose_checked(config_name: str, overrides: list[str], host: PluginHost) -> Any:
    """Compose ``config_name`` with ``overrides`` (no hydra.* keys); raise one-line errors."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from plugformer.cli.compose_errors import describe
    from plugformer.config.validate import check_composed

    job = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base=VERSION_BASE, job_name=config_name):
        try:
            cfg = compose(config_name, overrides=job)
            missing = sorted(OmegaConf.missing_keys(cfg))
            if missing:
                raise PlugformerError(f"missing required config value(s): {', '.join(missing)} "
                                      f"(set them as {missing[0]}=...)")
            check_composed(cfg, config_name, host.registries)  # unknown keys, _target_, ranges
            return cfg
        except PlugformerError:
            raise
        except Exception as exc:
            def keys_of(bad_key: str) -> list[str] | None:
                """Keys of the node holding ``bad_key``, composed with only the group choices."""
                key = lambda o: o.split("=")[0].lstrip("+~")
                groups = [o for o in job if "." not in key(o) and key(o) != bad_key]
                parent = bad_key.rpartition(".")[0]
                try:
                    node = compose(config_name, overrides=groups)
                    node = OmegaConf.select(node, parent) if parent else node
                except Exception:
                    return None
                return [str(k) for k in node.keys()] if hasattr(node, "keys") else None

            raise PlugformerError(describe(exc, job, host.registries, keys_of)) from None


def run_hydra(command: str, args: list[str], task: Callable[[Any, PluginHost], Any],
              extra: list[str] = [], check: Callable[[Any, PluginHost], Any] | None = None,
              handoff: Callable[[list[str], list[Any], bool], int | None] | None = None) -> int:
    """Compose (and ``check``) every combination, then hand over to ``hydra.main`` with ``task`` as the job.
    ``handoff(args, composed configs, multirun)`` may run the command some other way (the launcher) and
    return its exit status instead."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from plugformer import sweep

    host = prepare()
    strict_sweep = STRICT_SWEEP_FLAG in args  # plugformer's own flag: Hydra never sees it
    args = [a for a in args if a != STRICT_SWEEP_FLAG]
    overrides, multirun, informational = split_args(args)
    sweep.check_hydra_plugins(overrides)
    dirname_excludes = sweep_dirname_excludes(overrides) if multirun else []
    if multirun and not informational:
        pinned = sweep.pin_group_keys(overrides, _parse)
        args = [pinned[overrides.index(a)] if a in overrides else a for a in args]
        overrides = pinned
    composed = []

    def checked(combo: list[str]) -> None:
        cfg = compose_checked(command, combo, host)
        if check is not None:
            check(cfg, host)
        composed.append(cfg)

    plan = None
    if not informational and not multirun:
        checked(overrides)
    elif not informational:
        # another sweeper (optuna) cannot skip a combination: every one must be valid
        own_sweeper = not sweep.sweeper_chosen(args)
        strict = (STRICT_SWEEP_FLAG if strict_sweep else
                  "" if own_sweeper else "the chosen hydra/sweeper cannot skip combinations")
        plan = sweep.plan_sweep(sweep.expand(overrides, _parse), checked, strict,
                                lambda line: print(line, file=sys.stderr))
        if own_sweeper:
            sweep.register_sweeper()
            sweep.set_active_plan(plan)
            extra = [*extra, f"hydra/sweeper={sweep.SWEEPER_NAME}"]
        else:
            plan = None
    if handoff is not None and composed:
        status = handoff(args, composed, multirun)
        if status is not None:
            return status
    failures: list[str] = []
    error: list[PlugformerError | OSError] = []

    @hydra.main(config_path=f"pkg://{CONFIG_MODULE}", config_name=command, version_base=VERSION_BASE)
    def _job(cfg: Any) -> Any:
        # prepare() again: a launcher may run this job in a worker process (joblib), which loads plugins itself
        multirun_job = HydraConfig.get().mode == RunMode.MULTIRUN
        output_dir = Path(HydraConfig.get().runtime.output_dir)
        try:
            result = task(cfg, prepare())
        except (PlugformerError, OSError) as exc:
            if multirun_job:
                sweep.write_failure(output_dir, str(exc))
                failures.append(f"{HydraConfig.get().job.override_dirname}: {exc}")
                print(f"plugformer: job failed: {exc}", file=sys.stderr)
            else:
                error.append(exc)  # re-raised below, outside Hydra, so it prints as one line
            return None
        if multirun_job:
            sweep.clear_failure(output_dir)
        return result

    if multirun:
        excludes = ",".join(dirname_excludes)
        extra = [*extra, f"hydra.job.config.override_dirname.exclude_keys=[{excludes}]"]
    saved, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = [f"plugformer-{command}", *args, *extra]
    # Hydra re-raises what fails around a job (an unwritable run directory) instead of printing a traceback
    # and exiting: plugformer's main turns it into one line
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        _job()
    finally:
        sys.argv = saved
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
        sweep.set_active_plan(None)
    if error:
        raise error[0]
    if plan is not None and plan.outcomes:  # the sweeper saw every job, in-process or in launcher workers
        failures = plan.failures()
    if failures:
        raise PlugformerError(f"{len(failures)} sweep job(s) failed: " + " | ".join(failures))
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
    from plugformer.generation import Generator

    gen = Generator.from_checkpoint(cfg.checkpoint, host.registries, cfg.device, cfg.precision,
                                    adapter=cfg.get("adapter_dir"))
    for i in range(cfg.num_samples):
        text = gen.complete(cfg.prompt, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed + i)
        print(cfg.prompt + text)


def rename_keys(args: list[str], renames: dict[str, str]) -> list[str]:
    """``adapter=DIR`` → ``adapter_dir=DIR``: a command-line key that would collide with a Hydra config
    group of the same name (``adapter`` is one for train) is given its schema name before Hydra parses it."""
    out = []
    for a in args:
        prefix = a[: len(a) - len(a.lstrip("+~"))]
        key, eq, value = a[len(prefix):].partition("=")
        out.append(f"{prefix}{renames[key]}{eq}{value}" if key in renames else a)
    return out


def generate(args: list[str]) -> int:
    args = rename_keys(quote_free_text(args, ("prompt",)), {"adapter": "adapter_dir"})
    return run_hydra("generate", args, _generate_job, check=_check_generate)


def _validate_job(cfg: Any, host: PluginHost) -> None:
    from plugformer.config.schema import COMPONENT_GROUPS
    from plugformer.config.validate import validate_train

    entries = validate_train(cfg, host.registries)
    chosen = " ".join(f"{g}={cfg[g].name}" for g in COMPONENT_GROUPS)
    m = cfg.model
    print(f"config OK: {chosen} | model {m.n_layers}x{m.d_model} heads={m.n_heads} "
          f"seq_len={cfg.data.seq_len} precision={cfg.precision.value} device={cfg.device}")
    for family, entry in entries.items():
        print(f"  {family:<10} {entry.name:<12} {entry.provided_by}")


def validate(args: list[str]) -> int:
    return run_hydra("validate", args, _validate_job)
