"""A user prunes a checkpoint by magnitude (globally or per layer), samples from it, and fine-tunes it
with the pruned weights kept at zero."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

BASE = ["tokenizer=byte", "model.n_layers=2", "model.d_model=64", "model.n_heads=2", "data.seq_len=64",
        "trainer.batch_size=4", "data.max_bytes=200000", "trainer.max_steps=2", "threads=1",
        "trainer.callbacks=[metrics]"]


@pytest.fixture(scope="module")
def base(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("base") / "run"
    env = {**os.environ, "PLUGFORMER_CACHE": str(cache_dir)}
    subprocess.run([sys.executable, "-m", "plugformer", "train", *BASE, f"hydra.run.dir={run}"], check=True,
                   env=env, capture_output=True, text=True, timeout=600)
    return run / "checkpoints" / "last"


def block_weights(path: Path) -> dict:
    return {k: v for k, v in load_file(str(path / "model.safetensors")).items()
            if k.startswith("blocks.") and k.endswith(".weight") and v.dim() == 2}


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_pruning_reaches_the_target_sparsity_and_the_result_generates(cli, tmp_path, base, scope):
    out = tmp_path / "pruned"
    proc = cli("prune", f"checkpoint={base}", "sparsity=0.5", f"scope={scope}", f"out={out}")
    assert "pruned 8 weight matrices to 50.0% zeros" in proc.stdout
    weights = block_weights(out)
    zeros = {k: float((v == 0).float().mean()) for k, v in weights.items()}
    total = sum(int((v == 0).sum()) for v in weights.values()) / sum(v.numel() for v in weights.values())
    assert total == pytest.approx(0.5, abs=1e-3)
    if scope == "layer":
        assert all(z == pytest.approx(0.5, abs=1e-3) for z in zeros.values())
    else:  # one threshold: layers end up unevenly sparse
        assert max(zeros.values()) - min(zeros.values()) > 0.05
    dense = load_file(str(base / "model.safetensors"))
    assert (dense["tok_emb.weight"] == load_file(str(out / "model.safetensors"))["tok_emb.weight"]).all()
    record = OmegaConf.load(out / "config.yaml").pruning
    assert record.scope == scope and sorted(record.params) == sorted(weights)
    assert not list(tmp_path.glob(".tmp-*"))
    cli("generate", f"checkpoint={out}", "prompt=def ", "max_new_tokens=4")


def test_fine_tuning_a_pruned_checkpoint_keeps_its_zeros(cli, tmp_path, base):
    pruned = tmp_path / "pruned"
    cli("prune", f"checkpoint={base}", "sparsity=0.3", f"out={pruned}")
    run = tmp_path / "ft"
    cli("finetune", f"checkpoint={pruned}", "data=uppercase", "data.n_train=100", "data.n_val=10", "data.seq_len=32",
        "trainer.batch_size=8", "trainer.max_steps=5", "threads=1", "eval_examples=10", "trainer.callbacks=[metrics]",
        "optimizer.lr=1e-2", "optimizer.weight_decay=0.1", f"hydra.run.dir={run}")
    before, after = block_weights(pruned), block_weights(run / "checkpoints" / "last")
    for name, w in before.items():
        zero = w == 0
        assert (after[name][zero] == 0).all(), name
        assert not (after[name][~zero] == w[~zero]).all(), name  # the rest did train
    assert json.loads((run / "finetune.json").read_text())["zeros_kept"] == sum(int((w == 0).sum())
                                                                                  for w in before.values())
    assert "pruning" in OmegaConf.load(run / "checkpoints" / "last" / "config.yaml")  # a later fine-tune keeps them too


@pytest.mark.parametrize("args, message", [
    (["sparsity=1.5"], "sparsity=1.5 must be in [0, 1)"),
    (["sparsity=half"], "sparsity='half' is not a number"),
    (["sparsity=0.3", "scope=row"], "scope='row' is not one of global, layer"),
    (["sparsity=0.3", "amount=2"], "plugformer prune has no option 'amount'"),
    (["sparsity=0.3", "checkpoint=/nonexistent"], "is not a plugformer checkpoint directory"),
])
def test_bad_pruning_arguments_are_one_line_errors(cli, tmp_path, base, args, message):
    checkpoint = [] if any(a.startswith("checkpoint=") for a in args) else [f"checkpoint={base}"]
    proc = cli("prune", *checkpoint, *args, f"out={tmp_path / 'out'}", check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0


def test_pruning_into_a_non_empty_directory_is_refused(cli, tmp_path, base):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = cli("prune", f"checkpoint={base}", "sparsity=0.3", f"out={out}", check=False)
    assert proc.returncode == 2 and "already exists and is not empty" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
