"""``plugformer train launcher.nproc=N``: the CLI starts the ranks itself, no torchrun needed."""
from __future__ import annotations

import json
import time

import pytest

from plugformer.cli.launcher import worker_args


def test_ranks_get_the_overrides_minus_launcher_keys_and_one_shared_run_dir():
    args = ["launcher.nproc=2", "parallel=ddp", "+launcher.extra=1", "model.n_layers=2"]
    out = worker_args(args, run_dir="runs/x")
    assert out == ["parallel=ddp", "model.n_layers=2", "hydra.run.dir='runs/x'"]
    assert worker_args(["launcher.nproc=2", "hydra.run.dir=/d"]) == ["hydra.run.dir=/d"]
    picked = worker_args(["launcher.nproc=2"])
    assert len(picked) == 1 and picked[0].startswith("hydra.run.dir='runs/")
    # a sweep job's directory (named by its overrides) stays one override in Hydra's grammar
    assert worker_args(["model.n_layers=2"], run_dir="sw/model.n_layers=2") == [
        "model.n_layers=2", "hydra.run.dir='sw/model.n_layers=2'"]


def test_nproc_above_one_needs_a_distributed_strategy(cli):
    proc = cli("train", "launcher.nproc=2", "model.n_layers=2", check=False)
    assert proc.returncode == 2
    assert "launcher.nproc=2 needs a distributed strategy (parallel=ddp" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_sweep_inside_torchrun_is_refused_clearly(cli):
    env = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}  # as torchrun sets them
    proc = cli("train", "-m", "parallel=ddp", "attention=naive,sdpa", env=env, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "a sweep (-m) cannot run under torchrun" in proc.stderr
    assert "plugformer train -m launcher.nproc=N" in proc.stderr


@pytest.mark.slow
def test_each_sweep_job_starts_its_own_ranks_in_its_own_job_directory(cli, tmp_path, runs):
    sweep = tmp_path / "sweep"
    tiny = [o for o in runs.tiny if not o.startswith(("model.n_layers=", "model.d_model="))]
    common = [*tiny, "trainer.max_steps=2", "trainer.eval_every=0", "model.d_model=32"]
    proc = cli("train", "-m", "launcher.nproc=2", "parallel=ddp", *common, "model.n_layers=1,2",
               f"hydra.sweep.dir={sweep}")
    assert proc.stderr.count("launching 2 ranks") == 2
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["model.n_layers=1", "model.n_layers=2"]
    params = []
    for job in jobs:
        assert sorted(runs.losses(job)) == [1, 2]
        assert (job / "checkpoints" / "last" / "model.safetensors").is_file()
        # the ranks got this job's overrides, without -m and launcher.* (rank 0's Hydra recorded them)
        rank_overrides = (job / ".hydra" / "overrides.yaml").read_text()
        assert f"- {job.name}" in rank_overrides and "launcher" not in rank_overrides
        params.append(json.loads((job / "summary.json").read_text())["params"])
    assert params[0] < params[1]  # each job trained its own override (1 vs 2 layers)


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
