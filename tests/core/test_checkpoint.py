"""Checkpoints: nested state as JSON + safetensors, tied weights stored once, atomic step directories."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from plugformer.checkpoint import (
    MODEL_FILE, CheckpointDir, flatten_state, load_model, load_state, save_model, save_state, unflatten_state,
)


def optimizer_like_state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 3, generator=g)},
                  1: {"momentum_buffer": None}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "params": [0, 1], "fused": None,
                          "nesterov": False, "name": "decay"}],
        "nested": [[torch.arange(4)], (1, [2.5, {"k": torch.ones(1, dtype=torch.bfloat16)}])],
    }


def assert_same(a, b) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_nested_state_round_trips_in_memory_and_on_disk(tmp_path: Path):
    state = optimizer_like_state()
    skeleton, tensors = flatten_state(state)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values()) and len(tensors) == 4
    assert_same(unflatten_state(skeleton, tensors), state)

    save_state(tmp_path, "optimizer", state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optimizer.json", "optimizer.safetensors"]
    assert_same(load_state(tmp_path, "optimizer"), state)


def test_state_without_tensors_is_json_only(tmp_path: Path):
    save_state(tmp_path, "trainer_state", {"step": 7, "ok": True})
    assert [p.name for p in tmp_path.iterdir()] == ["trainer_state.json"]
    assert load_state(tmp_path, "trainer_state") == {"step": 7, "ok": True}


@pytest.mark.parametrize("bad", [object(), {1, 2}, b"bytes", Path("x")])
def test_non_plain_objects_are_rejected_clearly(bad):
    with pytest.raises(TypeError, match=rf"cannot store {type(bad).__name__} at 's\.1\.0'"):
        flatten_state({"a": 1, "b": [bad]})


def test_tied_weights_are_stored_once_and_restored_tied(tmp_path: Path):
    emb = torch.nn.Embedding(8, 4)
    head = torch.nn.Linear(4, 8, bias=False)
    head.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "head": head, "other": torch.nn.Linear(4, 4)})
    save_model(tmp_path, model.state_dict())

    from safetensors import safe_open

    with safe_open(str(tmp_path / MODEL_FILE), framework="pt") as f:
        assert sorted(f.keys()) == ["emb.weight", "other.bias", "other.weight"]
    loaded = load_model(tmp_path)
    assert set(loaded) == set(model.state_dict())
    assert loaded["head.weight"] is loaded["emb.weight"]
    assert torch.equal(loaded["head.weight"], emb.weight.detach())

    fresh = torch.nn.ModuleDict({"emb": torch.nn.Embedding(8, 4), "head": torch.nn.Linear(4, 8, bias=False),
                                 "other": torch.nn.Linear(4, 4)})
    fresh["head"].weight = fresh["emb"].weight
    fresh.load_state_dict(loaded)
    assert fresh["head"].weight is fresh["emb"].weight and torch.equal(fresh["emb"].weight, emb.weight)


def test_a_transposed_view_is_not_mistaken_for_a_tied_weight(tmp_path: Path):
    w = torch.arange(9.0).reshape(3, 3)
    save_model(tmp_path, {"w": w, "w_t": w.t()})
    assert torch.equal(load_model(tmp_path)["w_t"], w.t())


def write_step(ckpts: CheckpointDir, step: int) -> Path:
    tmp = ckpts.begin(step)
    save_state(tmp, "trainer_state", {"step": step})
    return ckpts.commit(step)


def test_commit_creates_step_dir_last_link_and_prunes(tmp_path: Path):
    ckpts = CheckpointDir(tmp_path / "checkpoints", keep_last=2)
    assert ckpts.last is None
    for step in (10, 20, 30):
        final = write_step(ckpts, step)
        assert final == ckpts.step_dir(step) and ckpts.last == final.resolve()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["last", "step-20", "step-30"]
    assert os.readlink(root / "last") == "step-30"  # relative: the run directory can be moved
    assert load_state(ckpts.last, "trainer_state") == {"step": 30}


def test_pruning_orders_steps_numerically(tmp_path: Path):
    ckpts = CheckpointDir(tmp_path, keep_last=2)
    for step in (9, 10, 100):
        write_step(ckpts, step)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-10", "step-100"]


def test_crash_before_commit_keeps_the_previous_checkpoint(tmp_path: Path):
    ckpts = CheckpointDir(tmp_path, keep_last=1)
    good = write_step(ckpts, 5)
    tmp = ckpts.begin(6)
    (tmp / MODEL_FILE).write_bytes(b"half a file")  # killed here: commit never runs
    assert ckpts.last == good.resolve() and load_state(ckpts.last, "trainer_state") == {"step": 5}
    assert not ckpts.step_dir(6).exists()

    write_step(ckpts, 7)  # the next save prunes old steps but never mistakes the leftover for one
    assert ckpts.last == ckpts.step_dir(7).resolve()
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-7"]


def test_begin_discards_leftovers_of_a_crashed_save(tmp_path: Path):
    ckpts = CheckpointDir(tmp_path)
    (ckpts.begin(3) / "stale.json").write_text("{}")
    tmp = ckpts.begin(3)
    assert list(tmp.iterdir()) == []


def test_a_full_checkpoint_holds_no_pickle(tmp_path: Path, builtin_host, tiny_config):
    """What a training run writes: model, optimizer and trainer state, config, plugins, tokenizer."""
    from omegaconf import OmegaConf

    from plugformer.build import build
    from plugformer.checkpoint import write_json
    from plugformer.model import build_model

    cfg = tiny_config("tokenizer=byte", "optimizer=adamw")
    registries = builtin_host.registries
    tokenizer = build(registries, "tokenizer", cfg.tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg, registries, tokenizer.vocab_size)
    optimizer = build(registries, "optimizer", cfg.optimizer, model)
    scheduler = build(registries, "scheduler", cfg.scheduler, optimizer, 10)
    model(torch.randint(0, 256, (2, 8))).sum().backward()
    optimizer.step()
    scheduler.step()
    strategy = build(registries, "parallel", cfg.parallel)

    ckpts = CheckpointDir(tmp_path)
    tmp = ckpts.begin(1)
    strategy.save(tmp, model, optimizer)
    save_state(tmp, "trainer_state", {"step": 1, "scheduler": scheduler.state_dict(),
                                      "torch_rng": torch.get_rng_state()})
    (tmp / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    write_json(tmp / "plugins.json", builtin_host.manifest())
    (tmp / "tokenizer").mkdir()
    tokenizer.save(tmp / "tokenizer")
    final = ckpts.commit(1)

    files = [p for p in final.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".yaml"}
    for p in files:
        assert not p.read_bytes().startswith(b"\x80"), f"{p} looks like a pickle"
    restored = build_model(cfg, registries, tokenizer.vocab_size)
    opt2 = build(registries, "optimizer", cfg.optimizer, restored)
    strategy.load(final, restored, opt2)
    for (k, a), b in zip(model.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(a, b), k
    assert_same(opt2.state_dict(), optimizer.state_dict())
