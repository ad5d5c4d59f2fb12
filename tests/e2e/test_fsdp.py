"""FSDP2 on two CPU processes (gloo): the single-process loss curve, 1/world of the training state per
rank, sharded checkpoints that resume across world sizes both ways, and a consolidated model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from plugformer.checkpoint import load_model

pytestmark = pytest.mark.slow

# tiny and fast: byte tokenizer (nothing to fit), a small slice of the corpus, 8 + 8 steps
TINY = ["model.n_layers=2", "model.d_model=64", "model.n_heads=2", "data.seq_len=64", "trainer.batch_size=4",
        "data.max_bytes=200000", "tokenizer=byte", "scheduler=constant", "optimizer.lr=3e-3", "seed=0",
        "threads=1", "trainer.log_every=1", "trainer.eval_batches=2", "trainer.eval_every=0"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
TOL = 1e-5  # max |loss difference| allowed between fsdp on 2 ranks and one process (float32 reduction order)
N = 8  # steps before the checkpoint; runs go to 2N


def _run(cmd: list[str], cwd: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLUGFORMER_CACHE": str(cache), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd[-6:])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _resume_dir(root: Path, checkpoint: Path) -> Path:
    """A run directory whose only checkpoint (``last``) is a copy of ``checkpoint``."""
    shutil.copytree(checkpoint, root / "checkpoints" / checkpoint.name)
    os.symlink(checkpoint.name, root / "checkpoints" / "last")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> dict[str, Path]:
    """``single``: one process to 2N (checkpoints at N and 2N); ``fsdp``: two ranks to N."""
    root = tmp_path_factory.mktemp("fsdp")

    def train(name: str, *args: str, launcher: list[str] | None = None) -> Path:
        _run([*(launcher or [sys.executable, "-m"]), "plugformer", "train", *TINY, *args,
              f"hydra.run.dir={root / name}"], root, cache_dir)
        return root / name

    return {"root": root, "single": train("single", f"trainer.max_steps={2 * N}", f"trainer.save_every={N}"),
            "fsdp": train("fsdp", f"trainer.max_steps={N}", "parallel=fsdp", launcher=TORCHRUN),
            # shards written in the background: step N/2 commits when step N's save begins, step N at the end
            "fsdp_async": train("fsdp_async", f"trainer.max_steps={N}", f"trainer.save_every={N // 2}",
                                "trainer.keep_last=2", "parallel=fsdp", "parallel.async_checkpoint=true",
                                launcher=TORCHRUN)}


def test_fsdp_on_two_processes_matches_the_single_process_loss_curve(runs):
    single, fsdp = _losses(runs["single"]), _losses(runs["fsdp"])
    assert sorted(fsdp) == list(range(1, N + 1))
    diffs = {s: abs(single[s] - fsdp[s]) for s in fsdp}
    print(f"fsdp vs single: max |loss diff| {max(diffs.values()):.2e} over {N} steps")
    assert max(diffs.values()) < TOL, diffs


def test_fsdp_checkpoint_is_sharded_and_holds_the_full_model_too(runs):
    step = runs["fsdp"] / "checkpoints" / f"step-{N}"
    files = {p.name for p in (step / "dcp").iterdir()}
    assert {".metadata", "__0_0.distcp", "__1_0.distcp", "optimizer.json"} <= files
    assert not [p for p in runs["fsdp"].rglob("*") if p.suffix in (".pt", ".pkl", ".bin")]
    # the consolidated copy equals the single-process model at the same step (same curve, same weights)
    full, reference = load_model(step), load_model(runs["single"] / "checkpoints" / f"step-{N}")
    assert full.keys() == reference.keys()
    assert max((full[k] - reference[k]).abs().max().item() for k in full) < 1e-4
    assert (step / "model.safetensors").stat().st_size == (runs["single"] / "checkpoints" / f"step-{N}" /
                                                           "model.safetensors").stat().st_size  # tied: stored once


def test_an_fsdp_checkpoint_resumes_on_one_process(runs, cache_dir):
    run = _resume_dir(runs["root"] / "fsdp_to_single", runs["fsdp"] / "checkpoints" / f"step-{N}")
    _run([sys.executable, "-m", "plugformer", "train", *TINY, f"trainer.max_steps={2 * N}", "resume=true",
          f"hydra.run.dir={run}"], run, cache_dir)
    straight, resumed = _losses(runs["single"]), _losses(run)
    assert sorted(resumed) == list(range(N + 1, 2 * N + 1))
    diffs = {s: abs(straight[s] - resumed[s]) for s in resumed}
    print(f"fsdp(2) -> single resume: max |loss diff| {max(diffs.values()):.2e}")
    assert max(diffs.values()) < TOL, diffs


def test_a_single_process_checkpoint_resumes_under_fsdp(runs, cache_dir):
    run = _resume_dir(runs["root"] / "single_to_fsdp", runs["single"] / "checkpoints" / f"step-{N}")
    _run([*TORCHRUN, "plugformer", "train", *TINY, f"trainer.max_steps={2 * N}", "parallel=fsdp", "resume=true",
          f"hydra.run.dir={run}"], run, cache_dir)
    straight, resumed = _losses(runs["single"]), _losses(run)
    assert sorted(resumed) == list(range(N + 1, 2 * N + 1))
    diffs = {s: abs(straight[s] - resumed[s]) for s in resumed}
    print(f"single -> fsdp(2) resume: max |loss diff| {max(diffs.values()):.2e}")
    assert max(diffs.values()) < TOL, diffs
    assert (run / "checkpoints" / f"step-{2 * N}" / "dcp" / ".metadata").is_file()


def test_an_asynchronous_checkpoint_commits_after_its_writes_and_resumes_like_a_synchronous_one(runs, cache_dir):
    ckpts = runs["fsdp_async"] / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last", f"step-{N // 2}", f"step-{N}"]  # no .tmp-step-*
    assert (ckpts / "last").resolve().name == f"step-{N}"
    assert _losses(runs["fsdp_async"]) == _losses(runs["fsdp"])
    written, reference = load_model(ckpts / f"step-{N}"), load_model(runs["fsdp"] / "checkpoints" / f"step-{N}")
    assert all(torch.equal(written[k], reference[k]) for k in reference)
    run = _resume_dir(runs["root"] / "async_to_single", ckpts / f"step-{N}")
    _run([sys.executable, "-m", "plugformer", "train", *TINY, f"trainer.max_steps={N + 2}", "resume=true",
          f"hydra.run.dir={run}"], run, cache_dir)
    straight, resumed = _losses(runs["single"]), _losses(run)
    assert sorted(resumed) == [N + 1, N + 2]
    assert max(abs(straight[s] - resumed[s]) for s in resumed) < TOL


def test_an_asynchronous_save_is_committed_only_once_its_future_completes():
    from concurrent.futures import Future

    from plugformer_parallel.group import ProcessGroupStrategy

    strategy, commits = ProcessGroupStrategy(None), []
    strategy.after_save(lambda: commits.append("sync"))  # nothing in flight: committed at once
    assert commits == ["sync"]
    future: Future = Future()
    strategy._pending = (future, None)  # what write_shards leaves after dcp.async_save
    strategy.after_save(lambda: commits.append("async"))
    assert commits == ["sync"]  # still writing: not committed
    future.set_result(None)
    strategy.wait_for_save()
    strategy.wait_for_save()  # idempotent
    assert commits == ["sync", "async"]
    failed: Future = Future()
    strategy._pending = (failed, None)
    strategy.after_save(lambda: commits.append("never"))
    failed.set_exception(OSError("disk full"))
    with pytest.raises(OSError, match="disk full"):
        strategy.wait_for_save()
    assert commits == ["sync", "async"]  # a failed write never commits


def test_generate_and_consolidate_from_an_fsdp_checkpoint(runs, cache_dir, tmp_path):
    step = runs["fsdp"] / "checkpoints" / f"step-{N}"
    sample = _run([sys.executable, "-m", "plugformer", "generate", f"checkpoint={step}", "prompt='def '",
                   "max_new_tokens=16", "temperature=0"], tmp_path, cache_dir).stdout
    assert sample.startswith("def ") and len(sample) > 4
    # the consolidated copy lost: rebuild it from the shards, in one process without a process group
    partial = tmp_path / "partial"
    shutil.copytree(step, partial)
    (partial / "model.safetensors").unlink()
    out = tmp_path / "export"
    proc = _run([sys.executable, "-m", "plugformer", "consolidate", f"checkpoint={partial}", f"out={out}"],
                tmp_path, cache_dir)
    assert "consolidated" in proc.stdout
    rebuilt, automatic = load_model(out), load_model(step)
    assert rebuilt.keys() == automatic.keys() and all((rebuilt[k] == automatic[k]).all() for k in rebuilt)
    again = _run([sys.executable, "-m", "plugformer", "generate", f"checkpoint={out}", "prompt='def '",
                  "max_new_tokens=16", "temperature=0"], tmp_path, cache_dir).stdout
    assert again == sample


MEMORY_PROBE = textwrap.dedent("""
    # local (this rank's) element counts of params, grads and optimizer state: one process, no fsdp,
    # then ranks 0 and 1 of a world of 2 on torch's fake process group (real sharding, no-op collectives)
    import json, sys
    import torch, torch.distributed as dist
    from omegaconf import OmegaConf
    from torch.testing._internal.distributed.fake_pg import FakeStore
    from plugformer.build import build
    from plugformer.model import apply_transforms, build_model
    from plugformer.plugins import load_plugins

    cfg = OmegaConf.load(sys.argv[1])
    registries, vocab = load_plugins().registries, int(sys.argv[2])
    local = lambda t: t.to_local().numel() if hasattr(t, "to_local") else t.numel()
    counts = {}
    for rank in (None, 0, 1):
        torch.manual_seed(0)
        model = build_model(cfg, registries, vocab)
        if rank is not None:
            dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=2)
            model = apply_transforms(model, build(registries, "parallel", cfg.parallel).transforms())
        optimizer = build(registries, "optimizer", cfg.optimizer, model)
        model(torch.randint(0, vocab, (2, 16))).float().logsumexp(-1).mean().backward()
        grads = sum(local(p.grad) for p in model.parameters() if p.grad is not None)
        optimizer.step()
        counts["single" if rank is None else f"rank{rank}"] = {
            "params": sum(local(p) for p in model.parameters()), "grads": grads,
            "optimizer": sum(local(v) for s in optimizer.state.values() for v in s.values()
                             if torch.is_tensor(v) and v.ndim)}
        if rank is not None:
            dist.destroy_process_group()
    print(json.dumps(counts))
""")


def test_each_fsdp_rank_holds_half_of_the_params_grads_and_optimizer_state(runs, cache_dir, tmp_path):
    step = runs["fsdp"] / "checkpoints" / f"step-{N}"
    vocab = load_model(step)["tok_emb.weight"].shape[0]
    counts = json.loads(_run([sys.executable, "-c", MEMORY_PROBE, str(step / "config.yaml"), str(vocab)],
                             tmp_path, cache_dir).stdout)
    single = counts["single"]
    print(f"elements per rank (single | fsdp rank0 | rank1): {counts}")
    for kind in ("params", "grads", "optimizer"):
        assert single[kind] > 0
        assert counts["rank0"][kind] + counts["rank1"][kind] == single[kind], kind  # a partition, no replica
        for rank in ("rank0", "rank1"):
            assert abs(counts[rank][kind] / single[kind] - 0.5) < 0.01, (kind, rank, counts)


def test_dcp_metadata_is_read_without_running_pickled_code(runs, tmp_path):
    import pickle

    from plugformer_parallel.sharded import SafeFileSystemReader

    good = SafeFileSystemReader(runs["fsdp"] / "checkpoints" / f"step-{N}" / "dcp").read_metadata()
    assert "model.tok_emb.weight" in good.state_dict_metadata
    assert "model.lm_head.weight" not in good.state_dict_metadata  # tied: stored once

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (tmp_path / ".metadata").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(pickle.UnpicklingError, match="not a checkpoint metadata class"):
        SafeFileSystemReader(tmp_path).read_metadata()
    assert not (tmp_path / "pwned").exists()
