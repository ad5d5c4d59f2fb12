"""The report of a sweep: one row per combination (what varied, size, final losses, speed, memory, time,
status) as Markdown and CSV, and the validation-loss curves of every combination as a PNG.

Runs that measured retrieval (``plugformer train -m retriever=bm25,faiss ...``, see
:mod:`plugformer.training.retrieval_eval`) add recall@1, recall@10 and MRR@10 columns after ``val_loss``, in the
Markdown table, the terminal table and the CSV, when any job has them.

It reads only what runs leave on disk: ``<sweep dir>/sweep.json`` (the plan: skipped combinations and
their reasons), and in each job directory ``.hydra/overrides.yaml``, ``summary.json`` (written when a run
reaches its last step), ``metrics.jsonl`` (the ``metrics`` callback) and ``failed.json``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugformer.checkpoint.layout import METRICS_FILE
from plugformer.checkpoint.rundir import MetricsLog
from plugformer.errors import PlugformerError
from plugformer.sweep import FAILED_FILE, SUMMARY_FILE, SWEEP_FILE
from plugformer.training.retrieval_eval import RETRIEVAL_METRICS

#: overrides that never distinguish one combination from another
IGNORED_KEYS = {"resume"}
STATUS_ORDER = {"finished": 0, "running": 1, "failed": 2, "skipped": 3}
COLUMNS = ["combination", "status", "params", "train_loss", "val_loss", "tokens_per_s", "peak_memory_mb",
           "wall_s", "steps", "note"]


@dataclass
class JobRow:
    """One combination of a sweep as found on disk."""

    overrides: list[str]
    status: str
    directory: Path | None = None
    params: int | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    tokens_per_s: float | None = None
    peak_memory_mb: float | None = None
    wall_s: float | None = None
    steps: int | None = None
    note: str = ""
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    label: str = ""
    retrieval: dict[str, float] = field(default_factory=dict)  # RETRIEVAL_METRICS the run measured (its summary)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_overrides(job_dir: Path) -> list[str] | None:
    import yaml

    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return None
    try:
        found = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return None
    return [str(o) for o in found] if isinstance(found, list) else None


def read_job(job_dir: Path, overrides: list[str]) -> JobRow:
    """A row for a job directory: ``finished`` (summary.json), ``failed`` (failed.json) or ``running``."""
    row = JobRow(overrides, "running", job_dir)
    rows, _ = MetricsLog(job_dir).read()  # a line being written right now (or cut by a crash) is left out
    row.train_curve = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    row.val_curve = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if row.train_curve:
        row.steps, row.train_loss = row.train_curve[-1]
    if row.val_curve:
        row.val_loss = row.val_curve[-1][1]
    summary = _read_json(job_dir / SUMMARY_FILE)
    failure = _read_json(job_dir / FAILED_FILE)
    if isinstance(failure, dict):
        row.status, row.note = "failed", str(failure.get("error", ""))
    elif isinstance(summary, dict):
        row.status = "finished"
        row.params = summary.get("params")
        row.train_loss = summary.get("loss", row.train_loss)
        row.val_loss = summary.get("val_loss", row.val_loss)
        row.tokens_per_s = summary.get("tokens_per_s_mean")
        row.peak_memory_mb = summary.get("peak_memory_mb")
        row.wall_s = summary.get("wall_s")
        row.steps = summary.get("step", row.steps)
        row.retrieval = {name: summary[f"val_{name}"] for name in RETRIEVAL_METRICS
                         if isinstance(summary.get(f"val_{name}"), (int, float))}
    return row


def collect(sweep_dir: Path) -> list[JobRow]:
    """Every combination of the sweep in ``sweep_dir``: its job directories, plus the skipped ones that
    ``sweep.json`` lists (they have no directory)."""
    if not sweep_dir.is_dir():
        raise PlugformerError(f"sweep directory '{sweep_dir}' does not exist")
    jobs: list[JobRow] = []
    seen: set[Path] = set()
    for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        overrides = _read_overrides(job_dir)
        if overrides is None and not (job_dir / METRICS_FILE).exists():
            continue  # not a job directory
        jobs.append(read_job(job_dir, overrides or [job_dir.name]))
        seen.add(job_dir.resolve())
    plan = _read_json(sweep_dir / SWEEP_FILE)
    for outcome in (plan or {}).get("jobs", []):
        if outcome.get("status") == "skipped":
            jobs.append(JobRow(list(outcome.get("overrides", [])), "skipped", note=str(outcome.get("reason", ""))))
        elif outcome.get("dir") and Path(outcome["dir"]).resolve() not in seen and Path(outcome["dir"]).is_dir():
            jobs.append(read_job(Path(outcome["dir"]), list(outcome.get("overrides", []))))
    if not jobs:
        raise PlugformerError(f"no sweep jobs found in '{sweep_dir}' (expected job directories holding "
                              f".hydra/overrides.yaml or {METRICS_FILE}, or a {SWEEP_FILE})")
    _label(jobs)
    jobs.sort(key=lambda j: (STATUS_ORDER.get(j.status, 9), math.inf if j.val_loss is None else j.val_loss))
    return jobs


def _label(jobs: list[JobRow]) -> None:
    """Name each job by the overrides that differ between jobs (what the sweep varied)."""
    def pairs(job: JobRow) -> dict[str, str]:
        return {k: v for k, _, v in (o.partition("=") for o in job.overrides) if k.lstrip("+~") not in IGNORED_KEYS}

    all_pairs = [pairs(j) for j in jobs]
    keys = list(dict.fromkeys(k for p in all_pairs for k in p))
    varying = [k for k in keys if len({p.get(k) for p in all_pairs}) > 1] or keys
    for job, p in zip(jobs, all_pairs, strict=True):
        job.label = " ".join(f"{k}={p[k]}" for k in varying if k in p) or "(defaults)"


def _cell(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def retrieval_columns(jobs: list[JobRow]) -> list[str]:
    """The retrieval metrics any job measured, in :data:`RETRIEVAL_METRICS` order (none: no columns)."""
    return [name for name in RETRIEVAL_METRICS if any(name in j.retrieval for j in jobs)]


def columns(jobs: list[JobRow]) -> list[str]:
    """:data:`COLUMNS`, with the retrieval metrics the jobs measured after ``val_loss``."""
    at = COLUMNS.index("val_loss") + 1
    return [*COLUMNS[:at], *retrieval_columns(jobs), *COLUMNS[at:]]


def table_rows(jobs: list[JobRow]) -> list[list[str]]:
    extra = retrieval_columns(jobs)
    return [[j.label, j.status, _cell(j.params), _cell(j.train_loss), _cell(j.val_loss),
             *(_cell(j.retrieval.get(name)) for name in extra), _cell(j.tokens_per_s, 0),
             _cell(j.peak_memory_mb, 1), _cell(j.wall_s, 1), _cell(j.steps), j.note] for j in jobs]


def markdown(jobs: list[JobRow], title: str) -> str:
    """The table as GitHub Markdown (``|`` inside cells escaped)."""
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    header = columns(jobs)
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in table_rows(jobs)]
    counts = {s: sum(j.status == s for j in jobs) for s in STATUS_ORDER}
    lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items() if n), ""]
    return "\n".join(lines)


def csv_text(jobs: list[JobRow]) -> str:
    """Raw numbers (not rounded) plus the full override list of each job."""
    out = io.StringIO()
    writer = csv.writer(out)
    extra = retrieval_columns(jobs)
    writer.writerow([*columns(jobs), "overrides", "directory"])
    for j in jobs:
        writer.writerow([j.label, j.status, j.params, j.train_loss, j.val_loss, *(j.retrieval.get(n) for n in extra),
                         j.tokens_per_s, j.peak_memory_mb, j.wall_s, j.steps, j.note, " ".join(j.overrides),
                         j.directory or ""])
    return out.getvalue()


def plain_table(jobs: list[JobRow]) -> str:
    """Aligned columns for the terminal; the note column (errors, skip reasons) last and unpadded."""
    header = columns(jobs)
    rows = [header, *table_rows(jobs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)).rstrip() +
                     (f"  {r[-1]}" if r[-1] else "") for r in rows)


def plot(jobs: list[JobRow], path: Path, title: str) -> bool:
    """Training and validation loss per step of every combination that logged any; False if none did."""
    curves = [j for j in jobs if j.val_curve or j.train_curve]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colors = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    styles, markers = ["-", "--", ":", "-."], ["o", "s", "^", "D", "v", "P"]
    for i, job in enumerate(curves):  # colour, line style and marker all vary: equal curves stay visible
        look = {"color": colors(i % colors.N), "linestyle": styles[i % len(styles)]}
        if job.train_curve:
            steps, losses = zip(*job.train_curve, strict=True)
            ax_train.plot(steps, losses, linewidth=1.3, alpha=0.85, **look)
        if job.val_curve:
            steps, losses = zip(*job.val_curve, strict=True)
            ax_val.plot(steps, losses, marker=markers[i % len(markers)], markersize=5, linewidth=1.6,
                        label=f"{job.label} ({losses[-1]:.3f})", **look)
    for ax, what in ((ax_train, "training loss"), (ax_val, "validation loss")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(what)
        ax.set_title(what)
        ax.grid(True, alpha=0.3)
    if ax_val.get_legend_handles_labels()[0]:
        ax_val.legend(title="combination (final val loss)", fontsize=8, title_fontsize=8,
                      loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_unavailable() -> str:
    """Why ``report.png`` cannot be drawn in this environment ("" when it can)."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return "matplotlib is not installed (pip install 'plugformer[report]')"
    return ""


def write_report(sweep_dir: Path, out_dir: Path | None = None) -> tuple[list[JobRow], dict[str, Path], str]:
    """Write ``report.md``, ``report.csv`` and ``report.png`` to ``out_dir`` (default: the sweep
    directory); return the rows, the files written, and why no PNG was drawn ("" when one was)."""
    jobs = collect(sweep_dir)
    out_dir = out_dir or sweep_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = ", ".join(f"{n} {s}" for s in STATUS_ORDER if (n := sum(j.status == s for j in jobs)))
    title = f"sweep {sweep_dir.resolve().name}: {len(jobs)} combinations ({counts})"
    files = {"md": out_dir / "report.md", "csv": out_dir / "report.csv"}
    files["md"].write_text(markdown(jobs, title))
    files["csv"].write_text(csv_text(jobs))
    no_plot = plot_unavailable()
    if not no_plot:
        if plot(jobs, out_dir / "report.png", title):
            files["png"] = out_dir / "report.png"
        else:
            no_plot = "no job has logged a loss yet"
    return jobs, files, no_plot
