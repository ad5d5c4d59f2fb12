"""2-D parallel (FSDP2 across 2 replicas × tensor parallel over 2 ranks) on four CPU processes (gloo):
the single-process loss curve, a checkpoint that resumes on one process as if never interrupted and
consolidates to the same model, and one-line refusals of degrees that do not divide."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plugformer.checkpoint import load_model

pytestmark = pytest.mark.slow

# the acceptance script's tiny model (2 layers, d 64, 4 heads, seq 64, batch 4), on a small corpus slice
TINY = ["model.n_layers=2", "model.d_model=64", "model.n_heads=4", "data.seq_len=64", "trainer.batch_size=4",
        "data.max_bytes=200000", "tokenizer=byte", "scheduler=constant", "optimizer.lr=3e-3", "seed=0",
        "threads=1", "trainer.log_every=1", "trainer.eval_batches=2", "trainer.eval_every=0"]
TOL = 2e-3  # the acceptance bound; measured: ~1e-6 (float32 reduction order)
N = 8  # steps of the 4-rank run; the single-process reference goes to N + 4


def _run(cmd: list[str], cwd: Path, cache: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLUGFORMER_CACHE": str(cache), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[-6:])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m"]


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fsdp_tp")

    def train(name: str, *args: str, launcher: list[str] | None = None) -> Path:
        _run([*(launcher or [sys.executable, "-m"]), "plugformer", "train", *TINY, *args,
              f"hydra.run.dir={root / name}"], root, cache_dir)
        return root / name

    return {"root": root,
            "single": train("single", f"trainer.max_steps={N + 4}", f"trainer.save_every={N}"),
            "fsdp_tp": train("fsdp_tp", f"trainer.max_steps={N}", "parallel=fsdp_tp", "parallel.tp=2",
                             launcher=_torchrun(4))}


def test_fsdp_tp_on_four_processes_matches_the_single_process_loss_curve(runs):
    single, two_d = _losses(runs["single"]), _losses(runs["fsdp_tp"])
    assert sorted(two_d) == list(range(1, N + 1))
    worst = max(abs(single[s] - two_d[s]) for s in two_d)
    print(f"fsdp_tp (dp 2 x tp 2) vs single: loss at step {N} {two_d[N]:.6f} vs {single[N]:.6f}, "
          f"max |loss diff| {worst:.2e}")
    assert worst < TOL


def test_an_fsdp_tp_checkpoint_is_sharded_consolidated_and_resumes_on_one_process(runs, cache_dir):
    step = runs["fsdp_tp"] / "checkpoints" / f"step-{N}"
    assert {".metadata", *(f"__{r}_0.distcp" for r in range(4))} <= {p.name for p in (step / "dcp").iterdir()}
    full, reference = load_model(step), load_model(runs["single"] / "checkpoints" / f"step-{N}")
    assert full.keys() == reference.keys()
    assert max((full[k] - reference[k]).abs().max().item() for k in full) < 1e-4  # usual qkv layout
    run = runs["root"] / "fsdp_tp_to_single"
    shutil.copytree(step, run / "checkpoints" / step.name)
    os.symlink(step.name, run / "checkpoints" / "last")
    _run([sys.executable, "-m", "plugformer", "train", *TINY, f"trainer.max_steps={N + 4}", "resume=true",
          f"hydra.run.dir={run}"], run, cache_dir)
    straight, resumed = _losses(runs["single"]), _losses(run)
    assert sorted(resumed) == list(range(N + 1, N + 5))
    worst = max(abs(straight[s] - resumed[s]) for s in resumed)
    print(f"fsdp_tp(4) -> single resume: max |loss diff| {worst:.2e}")
    assert worst < TOL


def test_consolidate_rebuilds_the_same_model_from_fsdp_tp_shards(runs, cache_dir, tmp_path):
    step = runs["fsdp_tp"] / "checkpoints" / f"step-{N}"
    partial = tmp_path / "partial"
    shutil.copytree(step, partial)
    (partial / "model.safetensors").unlink()
    _run([sys.executable, "-m", "plugformer", "consolidate", f"checkpoint={partial}", f"out={tmp_path / 'out'}"],
         tmp_path, cache_dir)
    rebuilt, automatic = load_model(tmp_path / "out"), load_model(step)
    assert rebuilt.keys() == automatic.keys() and all((rebuilt[k] == automatic[k]).all() for k in rebuilt)


def test_the_mesh_needs_a_world_size_divisible_by_the_tp_degree():
    from plugformer.errors import ConfigError
    from plugformer_parallel.fsdp_tp import mesh_shape

    assert mesh_shape(4, 2) == (2, 2) and mesh_shape(8, 4) == (2, 4) and mesh_shape(2, 2) == (1, 2)
    with pytest.raises(ConfigError, match="world size 6 is not divisible by parallel.tp=4"):
        mesh_shape(6, 4)


def test_bad_degrees_are_refused_in_one_line_before_any_rank_starts(cli):
    proc = cli("train", "parallel=fsdp_tp", "parallel.tp=2", "launcher.nproc=3", *TINY[:3], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "launcher.nproc=3 is not divisible by parallel.tp=2" in proc.stderr


def test_the_tp_degree_must_be_a_positive_number_of_ranks():
    from plugformer_parallel.schemas import FSDPTPConfig

    with pytest.raises(ValueError, match="parallel.tp=0 must be a positive whole number"):
        FSDPTPConfig(tp=0)
