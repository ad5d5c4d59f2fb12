"""A user trains a bi-encoder from the command line: ``plugformer train objective=contrastive data=stdlib_pairs``,
then fine-tunes it with ``plugformer finetune``."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

TINY = ["model.n_layers=2", "model.d_model=64", "model.n_heads=2", "data.seq_len=64", "trainer.batch_size=8",
        "data.max_bytes=600000", "tokenizer.vocab_size=512", "scheduler=constant", "optimizer.lr=3e-3", "seed=0",
        "threads=1", "trainer.log_every=1", "trainer.eval_batches=2"]


def test_contrastive_training_on_stdlib_pairs_writes_an_embedder_checkpoint(cli, tmp_path, runs):
    run = tmp_path / "emb"
    cli("train", "objective=contrastive", "objective.pooling=last", "data=stdlib_pairs", *TINY,
        "trainer.max_steps=6", f"hydra.run.dir={run}")
    rows = runs.metrics(run)
    assert {"loss", "in_batch_accuracy", "positive_similarity"} <= set(rows[0])
    assert any("val_in_batch_accuracy" in r for r in rows)
    last = run / "checkpoints" / "last"
    assert (last / "model.safetensors").is_file() and (last / "tokenizer" / "tokenizer.json").is_file()
    config = (last / "config.yaml").read_text()
    assert "name: contrastive" in config and "pooling: last" in config  # what the pooled embedder reads back

    # fine-tuning a checkpoint contrastively draws the same pairs
    tuned = tmp_path / "tuned"
    cli("finetune", f"checkpoint={run}", "objective=contrastive", "data=stdlib_pairs", "data.max_bytes=600000",
        "data.seq_len=64", "trainer.batch_size=8", "trainer.max_steps=2", "trainer.log_every=1", "threads=1",
        f"hydra.run.dir={tuned}")
    assert any("in_batch_accuracy" in r for r in runs.metrics(tuned))
    assert (tuned / "checkpoints" / "last" / "model.safetensors").is_file()

    wrong = cli("train", "objective=contrastive", "data=stdlib", *TINY, "trainer.max_steps=2",
                f"hydra.run.dir={tmp_path / 'wrong'}", check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].startswith("plugformer: error: data 'StdlibSource' yields plain "
                                                              "documents, not records; objective=contrastive needs")
