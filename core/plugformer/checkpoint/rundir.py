"""The run directory: who may write into it, whether it already holds a run, where a resume starts, and
its metrics log.

A directory that holds a run (checkpoints, metrics, a summary) is never written over silently:
``train``/``finetune`` into it must say ``resume=true`` (continue it) or ``overwrite=true`` (remove the
old run first); otherwise they stop with one line. While a run writes, its main process holds an
exclusive ``flock`` on ``<run dir>/.plugformer.lock``: a second process is refused in one line, and the
operating system releases the lock when the holder exits, however it dies (``kill -9`` included), so a
stale lock file left behind never blocks anyone.

``metrics.jsonl`` is strict JSON, one object per line: non-finite numbers are written as ``null``,
and a line cut short by a crash is dropped (with a warning) when the run resumes.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plugformer.errors import PlugformerError

from plugformer.checkpoint.layout import CHECKPOINTS_DIR, LAST, LOCK_FILE, METRICS_FILE, SUMMARY_FILE, TRAINER_STATE

#: a ``step-N`` directory is complete when it holds this file (the trainer writes it into every checkpoint)
TRAINER_STATE_FILE = f"{TRAINER_STATE}.json"


class RunDirError(PlugformerError):
    """A run directory that cannot be used as asked (in use, holds a run, broken ``last``)."""


def warn(message: str) -> None:
    """One warning line on stderr (the CLI's ``plugformer: error:`` lines have this shape too)."""
    print(f"plugformer: warning: {message}", file=sys.stderr, flush=True)


# -- what a directory holds ------------------------------------------------------------------------
def step_dirs(checkpoints: Path) -> list[tuple[int, Path]]:
    """``(N, path)`` of every ``step-N`` directory under ``checkpoints``, oldest first."""
    found = []
    for path in Path(checkpoints).glob("step-*"):
        suffix = path.name[5:]
        if suffix.isdigit() and path.is_dir() and not path.is_symlink():
            found.append((int(suffix), path))
    return sorted(found)


def is_complete(step_dir: Path) -> bool:
    """True for a checkpoint the trainer finished writing (a renamed ``step-N`` with its trainer state)."""
    return (Path(step_dir) / TRAINER_STATE_FILE).is_file()


def run_contents(run_dir: Path) -> list[str]:
    """What of a previous run ``run_dir`` holds, for messages (empty: nothing a new run would destroy).
    Hydra's own files (``.hydra/``, the job log) and a lock file do not make a run."""
    run_dir = Path(run_dir)
    held = []
    checkpoints = run_dir / CHECKPOINTS_DIR
    steps = step_dirs(checkpoints)
    if steps:
        more = f" and {len(steps) - 1} more" if len(steps) > 1 else ""
        held.append(f"{CHECKPOINTS_DIR}/step-{steps[-1][0]}{more}")
    elif (checkpoints / LAST).is_symlink():
        held.append(f"{CHECKPOINTS_DIR}/{LAST}")
    metrics = run_dir / METRICS_FILE
    if metrics.is_file() and metrics.stat().st_size > 0:
        held.append(METRICS_FILE)
    if (run_dir / SUMMARY_FILE).is_file():
        held.append(SUMMARY_FILE)
    return held


def clear_run(run_dir: Path) -> list[str]:
    """Remove a previous run's checkpoints, metrics and summary (``overwrite=true``); returns what went."""
    run_dir = Path(run_dir)
    removed = run_contents(run_dir)
    shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
    for name in (METRICS_FILE, SUMMARY_FILE):
        (run_dir / name).unlink(missing_ok=True)
    return removed


def check_reuse(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over an old one unless asked: ``resume=true`` continues it,
    ``overwrite=true`` removes it first (and says so)."""
    if resume and overwrite:
        raise RunDirError("resume=true and overwrite=true contradict each other: resume continues the run in "
                          f"{run_dir}, overwrite replaces it; pass one of them")
    held = run_contents(run_dir)
    if not held or resume:
        return
    if overwrite:
        warn(f"overwrite=true: removed the previous run's {', '.join(clear_run(run_dir))} from {run_dir}")
        return
    raise RunDirError(f"run directory {run_dir} already holds a run ({', '.join(held)}); pass resume=true to "
                      "continue it, overwrite=true to replace it, or choose another hydra.run.dir")


def refuse_reuse(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """The refusals of :func:`check_reuse` without its side effect (``overwrite=true`` removes nothing here):
    the CLI calls it before Hydra writes ``.hydra/`` into ``run_dir``; the run itself, holding the lock,
    then calls :func:`check_reuse`."""
    if overwrite and not resume:
        return
    check_reuse(run_dir, resume=resume, overwrite=overwrite)


def check_outside(run_dir: Path, path: Path, what: str) -> None:
    """Refuse a run directory that contains ``path`` (e.g. fine-tuning into the run of its starting
    checkpoint would prune or overwrite the checkpoint it starts from)."""
    run_dir, path = Path(run_dir).resolve(), Path(path).resolve()
    if path == run_dir or run_dir in path.parents:
        raise RunDirError(f"hydra.run.dir={run_dir} contains the {what} {path}; a run there would overwrite it: "
                          "choose another hydra.run.dir")


# -- where a resume starts ---------------------------------------------------------------------------
def _last_target(checkpoints: Path) -> tuple[Path | None, str]:
    """(the complete checkpoint ``last`` points at, or None; why not). ``last`` must be a symlink to a
    sibling ``step-N`` directory: a dangling, looping or foreign link is broken."""
    link = checkpoints / LAST
    if not link.is_symlink():
        return None, "missing" if not link.exists() else "not a symlink"
    try:
        target = os.readlink(link)
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    name = Path(target).name
    if name == LAST:
        return None, "loops (points at itself)"
    if Path(target).parent not in (Path(""), Path("."), checkpoints) or not name.startswith("step-") \
            or not name[5:].isdigit():
        return None, f"points at {target!r}, not a step-N checkpoint beside it"
    step_dir = checkpoints / name
    if step_dir.is_symlink():
        return None, f"points at {target!r}, itself a link (a loop?), not a checkpoint directory"
    if not step_dir.is_dir():
        return None, f"dangles (points at {target!r}, which does not exist)"
    if not is_complete(step_dir):
        return None, f"points at an incomplete checkpoint {name} (no {TRAINER_STATE_FILE})"
    return step_dir, ""


def last_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint ``<run dir>/checkpoints/last`` points at, or None (missing or broken)."""
    return _last_target(Path(run_dir) / CHECKPOINTS_DIR)[0]


def resume_checkpoint(run_dir: Path, quiet: bool = False) -> Path | None:
    """The checkpoint ``resume=true`` restores: ``checkpoints/last``; when ``last`` is missing or broken
    (dangling, looping), the newest complete ``step-N`` with a warning line; ``None`` when the directory
    holds no checkpoint (the run starts at step 0). A broken ``last`` with no complete checkpoint to fall
    back to is refused in one line, never silently restarted. ``quiet``: no warning lines (ranks but the
    main one)."""
    checkpoints = Path(run_dir) / CHECKPOINTS_DIR
    target, why = _last_target(checkpoints)
    if target is not None:
        return target
    complete = [path for _, path in step_dirs(checkpoints) if is_complete(path)]
    if why == "missing" and not complete:
        if not quiet and MetricsLog(run_dir).read()[0]:
            warn(f"resume=true: {run_dir} holds no checkpoint yet; the run starts again at step 0")
        return None
    if not complete:
        raise RunDirError(f"resume=true: {checkpoints / LAST} {why} and {checkpoints} holds no complete step-N "
                          "checkpoint to resume from; pass overwrite=true to start the run again")
    if not quiet:
        warn(f"resume=true: {checkpoints / LAST} {why}; resuming from the newest complete checkpoint "
             f"{complete[-1].name}")
    return complete[-1]


# -- one writer at a time --------------------------------------------------------------------------
class RunDirLock:
    """An exclusive, non-blocking ``flock`` on ``<run dir>/.plugformer.lock``, holding the owner's pid.

    The kernel drops the lock when the holding process exits, so a lock file left by a dead process is
    simply taken over. (Works on local file systems and NFSv4; Unix only.)"""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._file: Any = None

    def acquire(self) -> None:
        import fcntl

        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            f.close()
            raise RunDirError(f"run directory {self.run_dir} is in use by another plugformer process ({owner}); "
                              "wait for it to finish or choose another hydra.run.dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            import fcntl

            with contextlib.suppress(OSError):
                self._file.truncate(0)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool = False, main: bool = True) -> Iterator[None]:
    """Hold ``run_dir`` for one run: lock it, then refuse (or clear, with ``overwrite``) a previous run.
    Only the main process (rank 0) locks and checks; the others write nothing that could collide."""
    if not main:
        yield
        return
    with RunDirLock(run_dir):
        check_reuse(run_dir, resume=resume, overwrite=overwrite)
        yield


# -- metrics.jsonl -----------------------------------------------------------------------------------
def finite_or_none(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in dicts, lists, tuples) replaced by None, so that it
    serialises as strict JSON (``null``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def metrics_line(row: dict[str, Any]) -> str:
    """``row`` as one line of strict JSON (NaN and infinities become ``null``), newline included."""
    return json.dumps(finite_or_none(row), allow_nan=False) + "\n"


class MetricsLog:
    """``<run dir>/metrics.jsonl``: one JSON object per log or evaluation step, each with ``step``."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(metrics_line(row))

    def start(self, rows: list[dict[str, Any]]) -> None:
        """Begin the file with ``rows`` (replacing it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(metrics_line(r) for r in rows))

    def read(self) -> tuple[list[dict[str, Any]], int]:
        """(the rows that parse as JSON objects, the number of lines that do not: a crash mid-write)."""
        rows, broken = [], 0
        if not self.path.exists():
            return rows, broken
        for line in self.path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                broken += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                broken += 1
        return rows, broken

    def truncate_after(self, step: int) -> None:
        """Keep the rows up to ``step`` (a resume from checkpoint ``step``) and drop broken lines, with a
        warning; rewritten atomically."""
        if not self.path.exists():
            return
        rows, broken = self.read()
        if broken:
            warn(f"{self.path}: dropped {broken} unreadable line(s) (a run killed while writing them)")
        keep = [r for r in rows if _step_of(r) <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(metrics_line(r) for r in keep))
        os.replace(tmp, self.path)


def _step_of(row: dict[str, Any]) -> int:
    try:
        return int(row.get("step", 0))
    except (TypeError, ValueError):
        return 0


__all__ = ["CHECKPOINTS_DIR", "LOCK_FILE", "METRICS_FILE", "SUMMARY_FILE", "MetricsLog", "RunDirError", "RunDirLock",
           "check_outside", "check_reuse", "claim_run_dir", "clear_run", "finite_or_none", "is_complete",
           "last_checkpoint", "metrics_line", "refuse_reuse", "resume_checkpoint", "run_contents", "step_dirs", "warn"]
