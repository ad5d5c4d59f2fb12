"""A run directory is never written over silently: a previous run is resumed or refused (or removed on
request), one process writes at a time, ``resume=true`` never restarts from step 0 behind the user's back,
and ``metrics.jsonl`` stays strict JSON that a crash mid-line cannot make unreadable."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plugformer.checkpoint.rundir import (
    LOCK_FILE,
    MetricsLog,
    RunDirError,
    RunDirLock,
    check_outside,
    check_reuse,
    claim_run_dir,
    resume_checkpoint,
    run_contents,
)


def checkpoint(run: Path, step: int, complete: bool = True) -> Path:
    """A ``step-N`` directory as the trainer leaves it (``complete``: with its trainer state)."""
    path = run / "checkpoints" / f"step-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    return path


def point_last(run: Path, target: str) -> None:
    link = run / "checkpoints" / "last"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    os.symlink(target, link)


def strict_rows(path: Path) -> list[dict]:
    """Every line parsed as strict JSON (NaN/Infinity are not JSON)."""
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# -- a previous run is never overwritten silently -----------------------------------------------------
def test_hydra_files_alone_are_not_a_run(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("a: 1\n")
    (tmp_path / "train.log").write_text("")
    (tmp_path / LOCK_FILE).write_text("pid 1\n")
    assert run_contents(tmp_path) == []
    check_reuse(tmp_path, resume=False, overwrite=False)  # a new run may start here


def test_a_new_run_over_an_old_one_is_refused_in_one_line_naming_the_choices(tmp_path):
    checkpoint(tmp_path, 4)
    checkpoint(tmp_path, 8)
    MetricsLog(tmp_path).append({"step": 1, "loss": 5.0})
    with pytest.raises(RunDirError) as err:
        check_reuse(tmp_path, resume=False, overwrite=False)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path) in message
    assert "checkpoints/step-8 and 1 more" in message and "metrics.jsonl" in message
    assert "resume=true" in message and "overwrite=true" in message
    assert (tmp_path / "checkpoints" / "step-4").is_dir() and (tmp_path / "metrics.jsonl").stat().st_size > 0


def test_resume_continues_and_overwrite_removes_the_old_run_saying_so(tmp_path, capsys):
    checkpoint(tmp_path, 4)
    MetricsLog(tmp_path).append({"step": 1, "loss": 5.0})
    (tmp_path / "summary.json").write_text("{}")
    check_reuse(tmp_path, resume=True, overwrite=False)
    assert run_contents(tmp_path)  # resume touches nothing here
    check_reuse(tmp_path, resume=False, overwrite=True)
    assert run_contents(tmp_path) == [] and not (tmp_path / "checkpoints").exists()
    assert "overwrite=true: removed the previous run's checkpoints/step-4" in capsys.readouterr().err


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(RunDirError, match="resume=true and overwrite=true contradict each other"):
        check_reuse(tmp_path, resume=True, overwrite=True)


def test_a_run_directory_holding_the_starting_checkpoint_is_refused(tmp_path):
    start = checkpoint(tmp_path / "base", 8)
    with pytest.raises(RunDirError, match="contains the starting checkpoint"):
        check_outside(tmp_path / "base", start, "starting checkpoint")
    check_outside(tmp_path / "elsewhere", start, "starting checkpoint")


# -- resume=true restores the newest complete checkpoint or refuses ----------------------------------------
def test_resume_follows_last(tmp_path):
    checkpoint(tmp_path, 4)
    checkpoint(tmp_path, 8)
    point_last(tmp_path, "step-4")
    assert resume_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-4"


def test_nothing_to_resume_starts_at_step_zero(tmp_path, capsys):
    assert resume_checkpoint(tmp_path) is None
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("target", ["step-12", "last", "../../elsewhere/step-3"], ids=["dangling", "loop", "foreign"])
def test_a_broken_last_falls_back_to_the_newest_complete_checkpoint_with_a_warning(tmp_path, capsys, target):
    checkpoint(tmp_path, 4)
    checkpoint(tmp_path, 8)
    checkpoint(tmp_path, 10, complete=False)  # renamed but emptied by hand: not complete
    point_last(tmp_path, target)
    assert resume_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-8"
    warning = capsys.readouterr().err.strip()
    assert warning.count("\n") == 0 and "checkpoints/last" in warning and "step-8" in warning


@pytest.mark.parametrize("target", ["step-12", "last"], ids=["dangling", "loop"])
def test_a_broken_last_with_nothing_to_fall_back_to_is_refused_naming_it(tmp_path, target):
    checkpoint(tmp_path, 2, complete=False)
    point_last(tmp_path, target)
    with pytest.raises(RunDirError) as err:
        resume_checkpoint(tmp_path)
    assert str(tmp_path / "checkpoints" / "last") in str(err.value) and "overwrite=true" in str(err.value)


# -- one process at a time -----------------------------------------------------------------------------
def test_a_second_claim_on_a_locked_directory_is_refused_naming_the_holder(tmp_path):
    with claim_run_dir(tmp_path, resume=False):
        with pytest.raises(RunDirError) as err, RunDirLock(tmp_path):
            pass
        assert f"pid {os.getpid()}" in str(err.value) and "in use by another plugformer process" in str(err.value)
    with RunDirLock(tmp_path):  # released at the end of the first claim
        pass


def test_only_the_main_rank_locks(tmp_path):
    with RunDirLock(tmp_path), claim_run_dir(tmp_path, resume=False, main=False):
        pass


def _holder(tmp_path: Path) -> subprocess.Popen:
    code = ("import sys, time; from plugformer.checkpoint.rundir import RunDirLock; l = RunDirLock(sys.argv[1]); "
            "l.acquire(); print('locked', flush=True); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_the_lock_of_a_process_killed_with_sigkill_is_released(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunDirError, match=f"pid {holder.pid}"), RunDirLock(tmp_path):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / LOCK_FILE).exists()  # the stale file stays behind ...
    deadline = time.time() + 10
    while True:  # ... and blocks nobody
        try:
            with RunDirLock(tmp_path):
                break
        except RunDirError:
            assert time.time() < deadline
            time.sleep(0.05)


# -- metrics.jsonl ----------------------------------------------------------------------------------------
def test_non_finite_metrics_are_written_as_null_and_the_file_stays_strict_json(tmp_path):
    log = MetricsLog(tmp_path)
    log.append({"step": 1, "loss": float("nan"), "lr": 1e-3})
    log.append({"step": 2, "loss": float("inf"), "val": [float("-inf"), 1.0]})
    assert strict_rows(log.path) == [{"step": 1, "loss": None, "lr": 1e-3},
                                     {"step": 2, "loss": None, "val": [None, 1.0]}]


def test_a_line_cut_short_by_a_crash_is_dropped_on_resume_with_a_warning(tmp_path, capsys):
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3, 4):
        log.append({"step": step, "loss": 5.0 - step})
    with log.path.open("a") as f:
        f.write('{"step": 5, "lo')  # killed mid-write
    log.truncate_after(3)
    assert strict_rows(log.path) == [{"step": s, "loss": 5.0 - s} for s in (1, 2, 3)]
    assert "dropped 1 unreadable line" in capsys.readouterr().err
    log.append({"step": 4, "loss": 1.5})
    assert [r["step"] for r in strict_rows(log.path)] == [1, 2, 3, 4]
