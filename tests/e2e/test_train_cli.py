"""A user trains from the command line, resumes, and samples from the checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def test_train_writes_metrics_checkpoint_and_loss_decreases(cli, tmp_path, runs):
    run = tmp_path / "run"
    proc = cli("train", *runs.tiny, "trainer.max_steps=30", f"hydra.run.dir={run}")
    rows = runs.metrics(run)
    assert {"step", "loss", "lr", "tokens_per_s"} <= set(rows[0])
    assert any("val_loss" in r for r in rows)
    curve = runs.losses(run)
    assert curve[30] < curve[1] - 0.5
    last = run / "checkpoints" / "last"
    for name in ("model.safetensors", "config.yaml", "trainer_state.json", "optimizer.safetensors",
                 "plugins.json", "tokenizer/tokenizer.json"):
        assert (last / name).is_file(), name
    assert not [p for p in run.rglob("*") if p.suffix in (".pt", ".pkl", ".bin")]
    assert "schema_version: 1" in (last / "config.yaml").read_text()
    manifest = json.loads((run / "plugins.json").read_text())
    assert {m["name"] for m in manifest} >= {"attention", "position", "text", "training"}
    assert "train:" in proc.stderr  # the progress bar


def test_resume_reproduces_the_uninterrupted_loss_curve(cli, tmp_path, runs):
    straight, split = tmp_path / "straight", tmp_path / "split"
    cli("train", *runs.tiny, "trainer.max_steps=16", "trainer.save_every=8", f"hydra.run.dir={straight}")
    cli("train", *runs.tiny, "trainer.max_steps=8", f"hydra.run.dir={split}")
    cli("train", *runs.tiny, "trainer.max_steps=16", "resume=true", f"hydra.run.dir={split}")
    a, b = runs.losses(straight), runs.losses(split)
    assert sorted(a) == sorted(b) == list(range(1, 17))
    assert all(a[s] == b[s] for s in a), [(s, a[s], b[s]) for s in a if a[s] != b[s]]


def test_a_run_killed_mid_training_resumes_from_its_last_good_checkpoint(cli, tmp_path, cache_dir, runs):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = [*runs.tiny, "trainer.max_steps=400", "trainer.save_every=4", "trainer.eval_every=0"]
    cli("train", *runs.tiny, "trainer.max_steps=24", "trainer.save_every=4", "trainer.eval_every=0",
        f"hydra.run.dir={straight}")
    proc = subprocess.Popen([sys.executable, "-m", "plugformer", "train", *args, f"hydra.run.dir={killed}"],
                            cwd=tmp_path, env={**os.environ, "PLUGFORMER_CACHE": str(cache_dir)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "step-8").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = (killed / "checkpoints" / "last").resolve()
    assert last.name.startswith("step-") and (last / "model.safetensors").is_file()
    resumed_from = int(last.name[5:])
    cli("train", *runs.tiny, "trainer.max_steps=24", "trainer.save_every=4", "trainer.eval_every=0", "resume=true",
        f"hydra.run.dir={killed}")
    a, b = runs.losses(straight), runs.losses(killed)
    assert resumed_from < 24 and all(a[s] == b[s] for s in range(resumed_from + 1, 25))


def test_generate_is_deterministic_for_a_seed(cli, tmp_path, runs):
    run = tmp_path / "run"
    cli("train", *runs.tiny, "trainer.max_steps=10", f"hydra.run.dir={run}")
    sample = ["generate", f"checkpoint={run}/checkpoints/last", "prompt='def '", "max_new_tokens=24"]
    first, again = cli(*sample, "seed=0").stdout, cli(*sample, "seed=0").stdout
    other = cli(*sample, "seed=1", "temperature=1.5").stdout
    assert first == again and first.startswith("def ") and len(first) > 4
    assert other != first
    greedy = cli(*sample, "temperature=0").stdout
    assert greedy == cli(*sample, "top_k=1", "seed=5").stdout


def test_a_sweep_runs_every_combination_in_its_own_directory(cli, tmp_path, runs):
    sweep = tmp_path / "sweep"
    cli("train", "-m", *runs.tiny, "trainer.max_steps=6", "attention=naive,sdpa", f"hydra.sweep.dir={sweep}")
    dirs = sorted(p.parent for p in sweep.rglob("metrics.jsonl"))
    assert [d.name.split(",")[0] for d in dirs] == ["attention=naive", "attention=sdpa"]
    naive, sdpa = (runs.losses(d) for d in dirs)
    assert all(abs(naive[s] - sdpa[s]) < 1e-4 for s in naive)


def test_ddp_on_two_processes_matches_the_single_process_loss_curve(cli, tmp_path, runs):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    common = [*runs.tiny, "trainer.max_steps=8", "trainer.eval_every=0"]
    cli("train", *common, f"hydra.run.dir={single}")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    cli("train", *common, "parallel=ddp", f"hydra.run.dir={ddp}", launcher=torchrun)
    a, b = runs.losses(single), runs.losses(ddp)
    assert sorted(a) == sorted(b)
    assert all(abs(a[s] - b[s]) < 1e-5 for s in a), [(s, a[s], b[s]) for s in a]
