"""DeepSpeed ZeRO-3 on two CPU processes (gloo): the single-process loss curve with plugformer's own
optimizer and scheduler, a checkpoint that resumes the curve, and a consolidated model ``generate`` reads."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from plugformer.errors import ConfigError
from plugformer_parallel.schemas import DeepSpeedConfig

needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="deepspeed is not installed (pip install 'plugformer[deepspeed]')")

TINY = ["model.n_layers=2", "model.d_model=64", "model.n_heads=4", "data.seq_len=64", "trainer.batch_size=4",
        "data.max_bytes=200000", "tokenizer=byte", "optimizer=adamw", "scheduler=constant", "seed=0",
        "threads=1", "trainer.log_every=1", "trainer.eval_batches=2", "trainer.eval_every=0"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
TOL = 2e-3  # max |loss difference| allowed between ZeRO-3 on 2 ranks and one process
N = 4  # steps before the checkpoint; runs go to 2N


def _run(cmd: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLUGFORMER_CACHE": str(cache), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[-6:])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """``single``: one process to 2N; ``zero3``: two ranks to N (checkpoint at N); ``resumed``: a copy of
    that checkpoint continued to 2N on two ranks."""
    root = tmp_path_factory.mktemp("deepspeed")

    def train(name: str, *args: str, launcher: list[str] | None = None) -> Path:
        _run([*(launcher or [sys.executable, "-m"]), "plugformer", "train", *TINY, *args,
              f"hydra.run.dir={root / name}"], root, cache_dir)
        return root / name

    single = train("single", f"trainer.max_steps={2 * N}")
    zero3 = train("zero3", f"trainer.max_steps={N}", "parallel=deepspeed", "parallel.stage=3", launcher=TORCHRUN)
    checkpoint = zero3 / "checkpoints" / f"step-{N}"
    resumed = root / "resumed"
    shutil.copytree(checkpoint, resumed / "checkpoints" / checkpoint.name)
    os.symlink(checkpoint.name, resumed / "checkpoints" / "last")
    train("resumed", f"trainer.max_steps={2 * N}", "parallel=deepspeed", "parallel.stage=3", "resume=true",
          launcher=TORCHRUN)
    return {"single": single, "zero3": zero3, "resumed": resumed, "checkpoint": checkpoint}


@pytest.mark.slow
@needs_deepspeed
def test_zero3_on_two_processes_matches_the_single_process_loss_curve(runs):
    single, zero3 = _losses(runs["single"]), _losses(runs["zero3"])
    assert sorted(zero3) == list(range(1, N + 1))
    diffs = {s: abs(single[s] - zero3[s]) for s in zero3}
    print(f"deepspeed zero3 vs single: max |loss diff| {max(diffs.values()):.2e} over {N} steps")
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.slow
@needs_deepspeed
def test_a_zero3_checkpoint_resumes_the_curve(runs):
    straight, resumed = _losses(runs["single"]), _losses(runs["resumed"])
    assert sorted(resumed) == list(range(N + 1, 2 * N + 1))
    diffs = {s: abs(straight[s] - resumed[s]) for s in resumed}
    print(f"deepspeed zero3 resume vs uninterrupted single: max |loss diff| {max(diffs.values()):.2e}")
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.slow
@needs_deepspeed
def test_the_checkpoint_holds_a_full_model_and_per_rank_partitions_without_pickle(runs):
    files = {p.name for p in runs["checkpoint"].iterdir()}
    assert {"model.safetensors", "deepspeed.json", "zero-rank0.safetensors", "zero-rank1.safetensors",
            "trainer_state.json"} <= files
    assert json.loads((runs["checkpoint"] / "deepspeed.json").read_text()) == {"stage": 3, "world_size": 2}
    assert not [p for p in runs["zero3"].rglob("*") if p.suffix in (".pt", ".pkl", ".bin")]


@pytest.mark.slow
@needs_deepspeed
def test_generate_reads_the_zero3_checkpoint(runs, cache_dir, tmp_path):
    sample = _run([sys.executable, "-m", "plugformer", "generate", f"checkpoint={runs['checkpoint']}",
                   "prompt='def '", "max_new_tokens=16", "temperature=0"], tmp_path, cache_dir).stdout
    assert sample.startswith("def ") and len(sample) > 4


def test_without_deepspeed_the_strategy_reports_itself_unavailable_with_the_reason(monkeypatch):
    from plugformer_parallel import deepspeed as strategy

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert strategy.availability() == (False, strategy.NOT_INSTALLED)
    with pytest.raises(ConfigError, match="parallel=deepspeed is unavailable: deepspeed is not installed"):
        strategy.DeepSpeedStrategy(DeepSpeedConfig()).prepare(None, None, batch_size=4, grad_accum=1, grad_clip=1.0)


def test_a_zero_stage_outside_1_to_3_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"parallel.stage=4 is not a ZeRO stage; valid: 1, 2, 3"):
        DeepSpeedConfig(stage=4)


def test_resuming_needs_the_stage_and_world_size_the_partitions_were_written_for(tmp_path):
    from plugformer_parallel.deepspeed import DeepSpeedStrategy

    strategy = DeepSpeedStrategy(DeepSpeedConfig(stage=2))
    strategy.world_size = 2
    with pytest.raises(ConfigError, match="was not written by parallel=deepspeed"):
        strategy.load(tmp_path, None, None)
    (tmp_path / "deepspeed.json").write_text(json.dumps({"stage": 3, "world_size": 2}))
    with pytest.raises(ConfigError, match="stage 3 on 2 ranks; this run is stage 2 on 2 ranks"):
        strategy.load(tmp_path, None, None)
