"""``plugformer train launcher.nproc=N``: the CLI starts the ranks itself, no torchrun needed."""
from __future__ import annotations

import time

import pytest

from plugformer.cli.launcher import worker_args


def test_ranks_get_the_overrides_minus_launcher_keys_and_one_shared_run_dir():
    args = ["launcher.nproc=2", "parallel=ddp", "+launcher.extra=1", "model.n_layers=2"]
    out = worker_args(args, run_dir="runs/x")
    assert out == ["parallel=ddp", "model.n_layers=2", "hydra.run.dir=runs/x"]
    assert worker_args(["launcher.nproc=2", "hydra.run.dir=/d"]) == ["hydra.run.dir=/d"]
    picked = worker_args(["launcher.nproc=2"])
    assert len(picked) == 1 and picked[0].startswith("hydra.run.dir=runs/")


def test_nproc_above_one_needs_a_distributed_strategy(cli):
    proc = cli("train", "launcher.nproc=2", "model.n_layers=2", check=False)
    assert proc.returncode == 2
    assert "launcher.nproc=2 needs a distributed strategy (parallel=ddp" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_sweep_with_nproc_above_one_is_refused_clearly(cli):
    proc = cli("train", "-m", "launcher.nproc=2", "parallel=ddp", "attention=naive,sdpa", check=False)
    assert proc.returncode == 2
    assert "-m with launcher.nproc>1 is not supported yet" in proc.stderr


def test_local_rank_arguments_are_refused(cli):
    proc = cli("train", "--local_rank=0", check=False)
    assert proc.returncode == 2 and "reads LOCAL_RANK from the environment" in proc.stderr


@pytest.mark.slow
def test_launcher_runs_ddp_ranks_that_match_the_single_process_loss_curve(cli, tmp_path, runs):
    single, launched = tmp_path / "single", tmp_path / "launched"
    common = [*runs.tiny, "trainer.max_steps=8", "trainer.eval_every=0"]
    cli("train", *common, f"hydra.run.dir={single}")
    start = time.perf_counter()
    proc = cli("train", "launcher.nproc=2", "parallel=ddp", *common, f"hydra.run.dir={launched}")
    elapsed = time.perf_counter() - start
    assert "launching 2 ranks" in proc.stderr
    a, b = runs.losses(single), runs.losses(launched)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert all(abs(a[s] - b[s]) < 1e-5 for s in a), [(s, a[s], b[s]) for s in a]
    assert (launched / "checkpoints" / "last" / "model.safetensors").is_file()
    assert elapsed < 40, f"launched run took {elapsed:.1f}s"
