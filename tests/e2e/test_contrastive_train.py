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


def test_a_sweep_over_retrievers_measures_each_and_the_report_compares_them(cli, tmp_path):
    import csv

    sweep = tmp_path / "sweep"
    cli("train", "-m", "objective=contrastive", "data=stdlib_pairs", "retriever=bm25,faiss",
        "objective.learn_temperature=true", *TINY, "trainer.max_steps=3", f"hydra.sweep.dir={sweep}")
    cli("report", str(sweep))
    with open(sweep / "report.csv", newline="") as f:
        rows = {row["combination"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"retriever=bm25", "retriever=faiss"}
    for row in rows.values():
        assert row["status"] == "finished"
        recall1, recall10, mrr = (float(row[k]) for k in ("recall@1", "recall@10", "mrr@10"))
        assert 0 <= recall1 <= mrr <= recall10 <= 1 and recall10 > 0
    # the same model, two retrievers: a lexical and a dense one find different things
    assert rows["retriever=bm25"]["recall@10"] != rows["retriever=faiss"]["recall@10"]
    assert "| recall@1 | recall@10 | mrr@10 |" in (sweep / "report.md").read_text()
    last_eval = [line for line in (sweep / "retriever=faiss" / "metrics.jsonl").read_text().splitlines()
                 if "val_loss" in line][-1]
    assert '"val_recall@10"' in last_eval  # the final evaluation's line in metrics.jsonl

    wrong = cli("train", "objective=clm", "data=stdlib", "retriever=bm25", *TINY, "trainer.max_steps=2",
                f"hydra.run.dir={tmp_path / 'wrong'}", check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1].startswith(
        "plugformer: error: retriever=bm25 measures retrieval on the held-out query/positive pairs of the data, and "
        "data=stdlib yields plain documents")
