"""What a user already has on disk survives every command: a re-run into a run directory is refused (or
resumes), a broken ``checkpoints/last`` never restarts a run from step 0, a NaN run exits 2 keeping its
last finite checkpoint, a second process in the same directory is refused, a run killed mid-line resumes,
and ``out=`` never writes over a non-empty directory."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from plugformer.checkpoint import load_model

pytestmark = pytest.mark.slow

QUICK = ["trainer.callbacks=[metrics]", "trainer.eval_every=0"]


def strict_rows(path: Path) -> list[dict]:
    """metrics.jsonl parsed as strict JSON (NaN and Infinity are not JSON)."""
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def logged_steps(run: Path) -> list[int]:
    """The training steps metrics.jsonl has a loss row for (evaluation rows left out)."""
    return [r["step"] for r in strict_rows(run / "metrics.jsonl") if "loss" in r]


def one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("plugformer: error: "), line[-2000:]
    for fragment in fragments:
        assert fragment in line, line
    return line


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and not p.name.endswith(".log")}


def test_a_rerun_into_a_run_directory_is_refused_until_resumed_or_overwritten(cli, tmp_path, runs):
    run = tmp_path / "run"
    args = [*runs.tiny, *QUICK, "trainer.save_every=2", f"hydra.run.dir={run}"]
    cli("train", *args, "trainer.max_steps=4")
    before, hydra_record = snapshot(run), (run / ".hydra" / "overrides.yaml").read_text()
    refused = cli("train", *args, "trainer.max_steps=2", check=False)
    one_line_error(refused, f"run directory {run} already holds a run", "resume=true", "overwrite=true")
    assert snapshot(run) == before  # nothing of the first run was touched (last still at step-4)
    assert (run / ".hydra" / "overrides.yaml").read_text() == hydra_record  # refused before Hydra wrote there
    assert (run / "checkpoints" / "last").resolve().name == "step-4"
    cli("train", *args, "trainer.max_steps=2", "overwrite=true")
    assert logged_steps(run) == [1, 2]
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-2"]


def test_resume_with_a_dangling_last_falls_back_to_the_newest_complete_checkpoint(cli, tmp_path, runs):
    run = tmp_path / "run"
    args = [*runs.tiny, *QUICK, "trainer.save_every=2", "trainer.keep_last=0", f"hydra.run.dir={run}"]
    cli("train", *args, "trainer.max_steps=6")
    shutil.rmtree(run / "checkpoints" / "step-6")  # last now dangles
    resumed = cli("train", *args, "trainer.max_steps=8", "resume=true")
    assert f"{run / 'checkpoints' / 'last'} dangles" in resumed.stderr and "step-4" in resumed.stderr
    assert logged_steps(run) == list(range(1, 9))
    assert (run / "checkpoints" / "last").resolve().name == "step-8"
    # a looping last with no complete checkpoint to fall back to: refused, not restarted from step 0
    for step in (run / "checkpoints").glob("step-*"):
        shutil.rmtree(step)
    (run / "checkpoints" / "last").unlink()
    os.symlink("last", run / "checkpoints" / "last")
    refused = cli("train", *args, "trainer.max_steps=10", "resume=true", check=False)
    one_line_error(refused, f"{run / 'checkpoints' / 'last'} loops", "no complete step-N checkpoint")


def test_a_nan_run_exits_2_keeping_its_last_finite_checkpoint_and_json_metrics(cli, tmp_path, runs):
    run = tmp_path / "run"
    proc = cli("train", *runs.tiny, *QUICK, "optimizer=sgd", "optimizer.lr=1e4", "trainer.grad_clip=0",
               "trainer.max_steps=8", "trainer.save_every=1", "trainer.keep_last=1", f"hydra.run.dir={run}",
               check=False)
    line = one_line_error(proc, "stopped without saving it", "trainer.on_nonfinite=skip")
    # the loss of step S is NaN, or the update of step S made the weights infinite: nothing of S is saved
    found = re.search(r"non-finite (loss at|weights after) step (\d+)", line)
    assert found, line
    bad_step = int(found.group(2))
    last = (run / "checkpoints" / "last").resolve()
    assert last.name == f"step-{bad_step - 1}" and str(last) in line
    assert all(torch.isfinite(t).all() for t in load_model(last).values())
    assert [p.name for p in (run / "checkpoints").glob("step-*")] == [last.name]
    assert logged_steps(run)[:bad_step - 1] == list(range(1, bad_step)) and len(logged_steps(run)) <= bad_step


def _start(cli_env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "plugformer", "train", *args], cwd=cwd, env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_second_process_is_refused_and_a_killed_run_resumes_past_a_cut_metrics_line(cli, tmp_path, cache_dir,
                                                                                      runs):
    run = tmp_path / "run"
    common = [*runs.tiny, *QUICK, "trainer.save_every=4", f"hydra.run.dir={run}"]
    env = {**os.environ, "PLUGFORMER_CACHE": str(cache_dir)}
    first = _start(env, tmp_path, *common, "trainer.max_steps=100000")
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints" / "step-4").exists():
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.05)
        second = cli("train", *common, "trainer.max_steps=8", "resume=true", check=False)
        one_line_error(second, f"run directory {run} is in use by another plugformer process (pid {first.pid}")
    finally:
        first.send_signal(signal.SIGKILL)  # its lock goes with it; the lock file stays behind
        first.wait()
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99999, "loss": 4.1')  # as if killed in the middle of writing a line
    resumed = int((run / "checkpoints" / "last").resolve().name[5:])
    proc = cli("train", *common, f"trainer.max_steps={resumed + 2}", "resume=true")
    assert "dropped 1 unreadable line" in proc.stderr
    assert logged_steps(run) == list(range(1, resumed + 3))


def test_finetune_into_the_run_of_its_starting_checkpoint_is_refused(cli, tmp_path, runs):
    base = tmp_path / "base"
    cli("train", *runs.tiny, *QUICK, "trainer.max_steps=2", f"hydra.run.dir={base}")
    before = snapshot(base)
    proc = cli("finetune", f"checkpoint={base}", "data=uppercase", "data.seq_len=32", "trainer.max_steps=2",
               "threads=1", f"hydra.run.dir={base}", check=False)
    one_line_error(proc, f"hydra.run.dir={base} contains the starting checkpoint")
    assert snapshot(base) == before


def test_tokenizer_train_never_writes_over_a_non_empty_directory(cli, tmp_path, runs):
    run = tmp_path / "run"
    cli("train", *runs.tiny, *QUICK, "trainer.max_steps=1", f"hydra.run.dir={run}")
    tokenizer_dir = run / "checkpoints" / "last" / "tokenizer"
    before = snapshot(tokenizer_dir)
    proc = cli("tokenizer", "train", "tokenizer=bpe", "tokenizer.vocab_size=300", "data.max_bytes=20000",
               f"out={tokenizer_dir}", check=False)
    one_line_error(proc, f"out={tokenizer_dir} already exists and is not empty")
    assert snapshot(tokenizer_dir) == before
