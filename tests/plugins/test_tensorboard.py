"""The ``tensorboard`` callback: a run's scalars land in TensorBoard event files, the same numbers the
JSONL ``metrics`` callback writes, and a missing tensorboard package is reported, not crashed on."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("tensorboard", reason="the tensorboard callback needs the tensorboard package")

from plugformer import UnavailableError
from plugformer.build import build
from plugformer.run import RunInfo
from plugformer.training import Trainer


def read_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} from every event file in ``log_dir``, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}


def test_training_run_writes_its_metrics_as_tensorboard_scalars(builtin_host, tiny_config, tmp_path):
    cfg = tiny_config("tokenizer=byte", "data.max_bytes=200000", f"data.cache_dir={tmp_path / 'cache'}",
                      "trainer.max_steps=4", "trainer.log_every=2", "trainer.eval_every=2", "trainer.eval_batches=1",
                      "trainer.batch_size=2", "trainer.save_every=0", "trainer.callbacks=[metrics,tensorboard]")
    strategy = build(builtin_host.registries, "parallel", cfg.parallel)
    Trainer(cfg, tmp_path / "run", builtin_host, strategy, strategy.setup("cpu")).fit()

    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    evaluated = [r for r in rows if "val_loss" in r]
    assert {2, 4} <= {r["step"] for r in logged} and [r["step"] for r in evaluated] == [2, 4]
    assert set(scalars["train/loss"]) == {r["step"] for r in logged}
    for row in logged:
        for name in ("loss", "lr", "tokens_per_s"):
            assert scalars[f"train/{name}"][row["step"]] == pytest.approx(row[name], rel=1e-6)
    for row in evaluated:
        assert scalars["val/loss"][row["step"]] == pytest.approx(row["val_loss"], rel=1e-6)
        assert scalars["val/perplexity"][row["step"]] == pytest.approx(row["val_perplexity"], rel=1e-6)


def test_only_rank_zero_writes(builtin_host, tmp_path):
    logger = build(builtin_host.registries, "callback", "tensorboard", tmp_path)
    worker = RunInfo(run_dir=tmp_path, config={}, max_steps=2, rank=1, world_size=2)
    logger.plugformer_train_start(run=worker)
    logger.plugformer_step_end(run=worker, step=1, metrics={"loss": 1.0})
    logger.plugformer_train_end(run=worker, metrics={})
    assert not (tmp_path / "tensorboard").exists()


def test_without_the_tensorboard_package_the_callback_says_why(builtin_host, tmp_path, monkeypatch):
    import plugformer_training.tensorboard as tb

    monkeypatch.setattr(tb, "find_spec", lambda name: None)
    ok, reason = builtin_host.registries.callback.get("tensorboard").availability()
    assert not ok and "pip install 'plugformer[tensorboard]'" in reason
    with pytest.raises(UnavailableError, match="callback 'tensorboard' is unavailable here"):
        build(builtin_host.registries, "callback", "tensorboard", tmp_path)
