"""Sweep-aware composition: which combinations of a sweep run, which are skipped, and which resume.

``plugformer train -m attention=a,b position=c,d ...`` composes and validates every combination before
anything launches (:func:`plan_sweep`). An invalid combination (unknown name, bad key, a capability
clash) is skipped with its reason, one line each, instead of failing job k of N; ``--strict-sweep`` turns
any invalid combination into an error before launching.

:class:`PlugformerSweeper` is Hydra's basic sweeper (the cartesian product, batches, any launcher) that
launches only the valid combinations. Each job's directory is named by its swept overrides, so running
the same sweep again (same ``hydra.sweep.dir``) finds each job's directory: a finished job (its
``summary.json`` reached ``trainer.max_steps``) is not launched again, an unfinished one with a
checkpoint is launched with ``resume=true``. The decisions are written to ``<sweep dir>/sweep.json``,
which ``plugformer report`` reads.
"""
from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper

from plugformer.checkpoint.layout import SUMMARY_FILE
from plugformer.checkpoint.rundir import run_contents
from plugformer.errors import PlugformerError

log = logging.getLogger(__name__)

#: the file a sweep's decisions are written to, in the sweep directory
SWEEP_FILE = "sweep.json"
#: written into a job's directory when the job fails (the error, one line)
FAILED_FILE = "failed.json"
#: written by the trainer when a run reaches its last step
#: Hydra instantiates sweepers only from its plugin namespace: this is the name the class is registered under
SWEEPER_MODULE = "hydra_plugins.plugformer_sweeper"
SWEEPER_NAME = "plugformer"


@dataclass
class Combination:
    """One job of a sweep: its overrides, the swept ones among them, and why it cannot run ("" = valid)."""

    overrides: list[str]
    swept: list[str]
    problem: str = ""

    @property
    def label(self) -> str:
        return " ".join(self.swept) or "(no swept keys)"


@dataclass
class SweepPlan:
    """The combinations of one sweep as the CLI's pre-check found them; handed to the sweeper."""

    combinations: list[Combination]
    strict: str = ""
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # filled by the sweeper

    @property
    def invalid(self) -> list[Combination]:
        return [c for c in self.combinations if c.problem]

    def problem_of(self, swept: list[str]) -> str | None:
        """The recorded problem of the combination with these swept overrides (None: not in the plan)."""
        for c in self.combinations:
            if c.swept == swept:
                return c.problem
        return None

    def failures(self) -> list[str]:
        return [f"{o['label']}: {o['error']}" for o in self.outcomes if o["status"] == "failed"]


def varies(override: Any) -> bool:
    """A sweep over more than one value (a one-value ``choice(x)`` pins a key; see :func:`pin_group_keys`)."""
    if not override.is_sweep_override():
        return False
    if override.is_discrete_sweep():
        return len(list(override.sweep_string_iterator())) > 1
    return True


def pin_group_keys(overrides: list[str], parse: Callable[[list[str]], list[Any]]) -> list[str]:
    """Rewrite ``attention.chunk_size=8`` as ``attention.chunk_size=choice(8)`` when ``attention`` is swept.

    Hydra composes a multirun's master config without the sweeps, i.e. with the default option of a swept
    group, where a key of another option does not exist. As a one-value sweep the key is applied per job
    instead, and a combination whose option lacks the key is skipped like any other invalid one.
    """
    parsed = parse(overrides)
    swept_groups = {o.key_or_group for o in parsed if o.is_sweep_override() and "." not in o.key_or_group}
    out = []
    for line, o in zip(overrides, parsed, strict=True):
        group = o.key_or_group.split(".")[0]
        if (not o.is_sweep_override() and "." in o.key_or_group and group in swept_groups
                and not o.is_delete() and o.package is None):
            line = f"{o.get_key_element()}=choice({o.get_value_element_as_str()})"
        out.append(line)
    return out


def expand(overrides: list[str], parse: Callable[[list[str]], list[Any]]) -> list[Combination]:
    """The cartesian product of the overrides' sweeps, as Hydra's basic sweeper forms it. A continuous
    ``interval(a,b)`` (Optuna) is represented by its lower bound, so the pre-check composes one point."""
    axes: list[list[tuple[str, bool]]] = []
    for o in parse(overrides):
        key = o.get_key_element()
        if o.is_interval_sweep():
            axes.append([(f"{key}={o.value().start}", False)])
        elif o.is_sweep_override():
            axes.append([(f"{key}={v}", varies(o)) for v in o.sweep_string_iterator()])
        else:
            axes.append([(o.input_line, False)])
    return [Combination([s for s, _ in combo], [s for s, swept in combo if swept])
            for combo in itertools.product(*axes)]


def plan_sweep(combinations: list[Combination], check: Callable[[list[str]], None], strict: str,
               warn: Callable[[str], None]) -> SweepPlan:
    """Run ``check`` (compose + validate; raises :class:`PlugformerError`) on every combination.

    Invalid ones are skipped with their reason (``warn``, one line each); when ``strict`` (the reason it
    is, e.g. ``"--strict-sweep"``; ``""`` = not strict) any invalid one is an error, and so is a sweep in
    which none is valid.
    """
    for combo in combinations:
        try:
            check(combo.overrides)
        except PlugformerError as exc:
            combo.problem = str(exc)
    plan = SweepPlan(combinations, strict)
    bad = plan.invalid
    if bad and (strict or len(bad) == len(combinations)):
        why = strict or "none is valid"
        raise PlugformerError(f"{len(bad)} of {len(combinations)} sweep combination(s) invalid ({why}): " +
                              " | ".join(f"{c.label}: {c.problem}" for c in bad))
    if bad:
        warn(f"plugformer: skipping {len(bad)} of {len(combinations)} sweep combination(s) "
             "(pass --strict-sweep to make this an error):")
        for c in bad:
            warn(f"  skipped {c.label}: {c.problem}")
    return plan


_active_plan: SweepPlan | None = None


def set_active_plan(plan: SweepPlan | None) -> None:
    """Hand the CLI's plan to the sweeper that Hydra instantiates in this process."""
    global _active_plan
    _active_plan = plan


def active_plan() -> SweepPlan | None:
    return _active_plan


def job_state(job_dir: Path, max_steps: int) -> str:
    """``finished`` (summary reached ``max_steps``), ``resumable`` (it holds a run: checkpoints or metrics;
    resuming never overwrites them) or ``new``."""
    summary = job_dir / SUMMARY_FILE
    if summary.exists():
        try:
            if json.loads(summary.read_text()).get("step", 0) >= max_steps:
                return "finished"
        except (OSError, ValueError):
            pass
    return "resumable" if run_contents(job_dir) else "new"


class PlugformerSweeper(BasicSweeper):
    """Hydra's basic sweeper, launching only what the plan says can run and has not finished yet."""

    def __init__(self, max_batch_size: int | None, params: dict[str, str] | None = None) -> None:
        # not BasicSweeper.__init__: Hydra's plugin scan re-executes its module, and its
        # ``super(BasicSweeper, self)`` would then name a class this one does not derive from
        Sweeper.__init__(self)
        self.overrides = None
        self.batch_index = 0
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context = None
        self.config = None
        self.launcher = None

    def split_arguments(self, overrides: list[Any], max_batch_size: int | None) -> list[list[list[str]]]:  # type: ignore[override]
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        swept_keys = {o.get_key_element() for o in overrides if varies(o)}
        plan = active_plan() or SweepPlan([])
        plan.outcomes.clear()
        launch = []
        for job in jobs:
            swept = [j for j in job if j.split("=", 1)[0] in swept_keys]
            outcome: dict[str, Any] = {"label": " ".join(swept), "overrides": list(job), "swept": swept,
                                       "status": "launched", "reason": "", "dir": ""}
            problem = plan.problem_of(swept)
            if problem:
                outcome.update(status="skipped", reason=problem)
            else:
                job_dir, max_steps = self._job_dir(job)
                if job_dir is not None:
                    outcome["dir"] = str(job_dir)
                    state = job_state(job_dir, max_steps)
                    if state == "finished":
                        outcome.update(status="finished", reason="already finished (summary.json)")
                    elif state == "resumable":
                        job = [j for j in job if j.split("=", 1)[0] != "resume"] + ["resume=true"]
                        outcome.update(status="resumed", overrides=list(job))
                if outcome["status"] in ("launched", "resumed"):
                    launch.append(job)
            plan.outcomes.append(outcome)
        counts = {s: sum(o["status"] == s for o in plan.outcomes) for s in ("launched", "resumed", "finished",
                                                                            "skipped")}
        log.info("plugformer sweep: %s", ", ".join(f"{n} {s}" for s, n in counts.items()))
        self._write_plan(plan)
        if not launch:
            return []
        return list(BasicSweeper.split_overrides_to_chunks(launch, max_batch_size))

    def sweep(self, arguments: list[str]) -> Any:
        returns = super().sweep(arguments)
        plan = active_plan()
        if plan is not None:  # record how each launched job ended
            by_overrides = {tuple(o["overrides"]): o for o in plan.outcomes}
            for batch in returns:
                for r in batch:
                    outcome = by_overrides.get(tuple(r.overrides))
                    if outcome is None:
                        continue
                    failed = _read_failure(Path(r.working_dir or outcome["dir"] or "."))
                    if failed is not None:
                        outcome.update(status="failed", error=failed)
                    else:
                        outcome["status"] = "finished"
            self._write_plan(plan)
        return returns

    def _job_dir(self, job: list[str]) -> tuple[Path | None, int]:
        """Where Hydra will run ``job`` (its swept overrides name the subdirectory), and its max_steps."""
        assert self.hydra_context is not None and self.config is not None
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            directory = Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
            max_steps = int(cfg.trainer.max_steps) if "trainer" in cfg else 0
        except Exception:  # noqa: BLE001 - a sub-directory pattern using the job number: cannot be predicted
            return None, 0
        return directory, max_steps

    def _write_plan(self, plan: SweepPlan) -> None:
        assert self.config is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        data = {"strict": plan.strict, "jobs": plan.outcomes,
                "combinations": [asdict(c) for c in plan.combinations]}
        tmp = sweep_dir / f".{SWEEP_FILE}.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(sweep_dir / SWEEP_FILE)


def _read_failure(job_dir: Path) -> str | None:
    path = job_dir / FAILED_FILE
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text()).get("error", "failed"))
    except (OSError, ValueError):
        return "failed"


def write_failure(job_dir: Path, error: str) -> None:
    """Mark a job as failed (read by the sweeper and ``plugformer report``)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / FAILED_FILE).write_text(json.dumps({"error": error}))


def clear_failure(job_dir: Path) -> None:
    (job_dir / FAILED_FILE).unlink(missing_ok=True)


@dataclass
class PlugformerSweeperConf:
    """``hydra/sweeper=plugformer`` (the CLI selects it for every ``-m`` run unless another is chosen)."""

    _target_: str = f"{SWEEPER_MODULE}.PlugformerSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None


def register_sweeper() -> None:
    """Idempotent: make ``hydra/sweeper=plugformer`` available in this process.

    Hydra instantiates a sweeper only from a module under ``hydra_plugins`` (normally found by scanning
    that namespace package). plugformer registers its sweeper itself, as it does its search-path plugin:
    the class is exposed as ``hydra_plugins.plugformer_sweeper.PlugformerSweeper`` in this process only.
    """
    import importlib
    import sys
    import types

    try:
        namespace = importlib.import_module("hydra_plugins")
    except ImportError:  # no Hydra plugin package installed at all
        namespace = types.ModuleType("hydra_plugins")
        namespace.__path__ = []
        sys.modules["hydra_plugins"] = namespace
    module = sys.modules.get(SWEEPER_MODULE)
    if module is None:
        module = types.ModuleType(SWEEPER_MODULE, "plugformer's sweeper (see plugformer.sweep)")
        sys.modules[SWEEPER_MODULE] = module
        setattr(namespace, SWEEPER_MODULE.rpartition(".")[2], module)
    module.PlugformerSweeper = PlugformerSweeper  # type: ignore[attr-defined]
    PlugformerSweeper.__module__ = SWEEPER_MODULE
    Plugins.instance().register(PlugformerSweeper)
    ConfigStore.instance().store(group="hydra/sweeper", name=SWEEPER_NAME, node=PlugformerSweeperConf,
                                 provider="plugformer")


#: Hydra launcher/sweeper options and the (module, pip package) each needs
HYDRA_PLUGIN_PACKAGES: dict[str, tuple[str, str]] = {
    "hydra/launcher=joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "hydra/launcher=slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/launcher=submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/launcher=submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
}


def check_hydra_plugins(args: list[str]) -> None:
    """One line naming the pip package when a chosen Hydra launcher/sweeper is not installed (Hydra itself
    would answer with a multi-line config-search error)."""
    import importlib.util

    for arg in args:
        needed = HYDRA_PLUGIN_PACKAGES.get(arg.lstrip("+~"))
        if needed is None:
            continue
        try:
            found = importlib.util.find_spec(needed[0]) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise PlugformerError(f"{arg} needs the Hydra plugin {needed[1]}, which is not installed "
                                  f"(pip install {needed[1]})")


def sweeper_chosen(args: list[str]) -> bool:
    """Whether the user picked a sweeper themselves (``hydra/sweeper=optuna``)."""
    return any(a.lstrip("+~").startswith("hydra/sweeper=") for a in args)


__all__ = ["Combination", "PlugformerSweeper", "SweepPlan", "expand", "plan_sweep", "register_sweeper"]
