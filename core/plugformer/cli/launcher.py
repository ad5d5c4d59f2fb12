"""``plugformer train launcher.nproc=N parallel=ddp ...``: start N ranks on this machine without torchrun.

The CLI composes and checks the config once, then runs torch's elastic agent itself (the machinery
behind ``torchrun --standalone``: a c10d rendezvous on localhost, no restarts). Every rank runs
``python -m plugformer train <the same overrides minus launcher.*> hydra.run.dir=DIR`` and reads its
rank from the environment variables the agent sets (plugformer never takes ``--local_rank``). All ranks
share one run directory: the user's ``hydra.run.dir``, or ``runs/DATE/TIME`` picked here once. In a sweep
(``-m``) Hydra runs the jobs in this process and each job starts its own ranks, whose run directory is
that job's directory (so jobs never share ranks, arguments or directories).
Global options (``--allow-plugin`` ...) reach the ranks as the environment variables they set.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import tempfile
import uuid
from typing import Any

from plugformer.checkpoint.layout import SUMMARY_FILE
from plugformer.errors import ConfigError, PlugformerError

KEY = "launcher"


def is_launcher_override(arg: str) -> bool:
    key = arg.split("=", 1)[0].lstrip("+~")
    return key == KEY or key.startswith(KEY + ".")


def worker_args(args: list[str], run_dir: str | None = None) -> list[str]:
    """The ranks' ``train`` arguments: ``args`` without launcher.* overrides, with one shared run dir."""
    out = [a for a in args if not is_launcher_override(a)]
    if not any(a.startswith("hydra.run.dir=") for a in out):
        from plugformer.config.compose import quote_free_text

        run_dir = run_dir or os.path.join("runs", datetime.datetime.now().strftime("%Y-%m-%d/%H-%M-%S"))
        # quoted for Hydra's override grammar: a sweep job's directory is named like `model.n_layers=2`
        out += quote_free_text([f"hydra.run.dir={run_dir}"], ("hydra.run.dir",))
    return out


def under_torchrun() -> bool:
    """This process is already one rank of a distributed launch (torchrun, or this launcher)."""
    return any(k in os.environ for k in ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE", "WORLD_SIZE"))


def nproc_problem(cfg: Any, parallel_entry: Any, registries: Any) -> str | None:
    """Why ``cfg.launcher`` cannot be honoured with the chosen strategy, or None."""
    launcher = cfg.get(KEY)
    n = int(launcher.nproc) if launcher is not None else 1
    if n < 1:
        return f"launcher.nproc={n} must be >= 1"
    if n > 1 and not parallel_entry.capabilities.get("distributed", False):
        names = sorted(e.name for e in registries.parallel if e.capabilities.get("distributed", False))
        offered = " | ".join(f"parallel={name}" for name in names) or "none registered"
        return (f"launcher.nproc={n} needs a distributed strategy ({offered}); "
                f"parallel={parallel_entry.name} runs one process")
    tp = cfg.parallel.get("tp") if n > 1 else None  # a 2-D strategy's tensor-parallel degree
    if isinstance(tp, int) and tp > 0 and n % tp:
        return (f"launcher.nproc={n} is not divisible by parallel.tp={tp} (parallel={parallel_entry.name} runs "
                f"nproc/tp replicas of tp ranks); use a multiple of {tp}")
    return None


def requested_nproc(cfgs: list[Any]) -> int:
    return max((int(c.get(KEY).nproc) for c in cfgs if c.get(KEY) is not None), default=1)


def maybe_launch(args: list[str], cfgs: list[Any], multirun: bool) -> int | None:
    """Launch the ranks when the composed configs ask for launcher.nproc > 1 and this process is not
    already a rank; return the exit status, or None to run the command in this process."""
    n = requested_nproc(cfgs)
    if multirun and under_torchrun():
        raise ConfigError("a sweep (-m) cannot run under torchrun: every rank would run every job, each picking "
                          "its own sweep directory; run `plugformer train -m launcher.nproc=N ...` instead (each "
                          "job then starts its own N ranks in its own job directory)")
    if n <= 1:
        return None
    if under_torchrun():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
        if n != local:
            raise ConfigError(f"launcher.nproc={n}, but this process is already one of {local} ranks that "
                              "torchrun started on this machine; drop launcher.nproc or torchrun")
        return None
    if multirun:
        return None  # Hydra runs the sweep in this process; each job starts its own ranks (launch_sweep_job)
    return launch(n, worker_args(args))


def launch_sweep_job(nproc: int, job_overrides: list[str], job_dir: str) -> dict[str, Any]:
    """One job of a sweep (``plugformer train -m launcher.nproc=N ...``): start its ``nproc`` ranks with
    the job's own overrides (no ``-m``, no launcher keys) and Hydra's job directory as their run dir;
    return the summary rank 0 wrote. Each job gets a fresh elastic agent (own rendezvous, own run id)."""
    status = launch(nproc, worker_args(job_overrides, run_dir=job_dir))
    if status != 0:
        raise PlugformerError(f"its {nproc} ranks exited with status {status}")
    summary = os.path.join(job_dir, SUMMARY_FILE)
    if not os.path.exists(summary):
        return {}
    with open(summary, encoding="utf-8") as f:
        return json.load(f)


def launch(nproc: int, args: list[str]) -> int:
    """Run ``python -m plugformer train ARGS`` in ``nproc`` ranks under torch's elastic agent."""
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if "OMP_NUM_THREADS" not in os.environ:  # as torchrun does, but share the cores rather than 1 each
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    run_dir = next(a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")).strip("'")
    # the agent's own log lines repeat what the ranks and the summary below say
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    print(f"plugformer: launching {nproc} ranks on this machine; run directory {run_dir}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="plugformer-launch-") as log_dir:
        config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                              rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                              monitor_interval=0.1, logs_specs=DefaultLogsSpecs(log_dir=log_dir))
        try:
            elastic_launch(config, sys.executable)("-m", "plugformer", "train", *args)
        except ChildFailedError as exc:
            rank, failure = min(exc.failures.items())
            print(f"plugformer: error: rank {rank} of {nproc} exited with status {failure.exitcode} "
                  "(its output is above)", file=sys.stderr)
            return failure.exitcode if failure.exitcode > 0 else 1
        except SignalException as exc:
            print(f"plugformer: interrupted ({exc.sigval.name}); ranks stopped", file=sys.stderr)
            return 128 + int(exc.sigval)
        except Exception as exc:  # rendezvous or agent failure: not the user's training code
            raise PlugformerError(f"launcher failed to start {nproc} ranks: {type(exc).__name__}: {exc}") from None
    return 0


__all__ = ["is_launcher_override", "launch", "launch_sweep_job", "maybe_launch", "nproc_problem", "under_torchrun",
           "worker_args"]
