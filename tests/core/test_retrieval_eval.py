"""A train run's retrieval figures: each held-out query searches every held-out positive, and recall@1, recall@10
and MRR@10 say how often its own positive comes first or in the top ten; a sweep's report shows them as columns."""
from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from plugformer.errors import ConfigError
from plugformer.interfaces import TextSource
from plugformer.interfaces.retrieval import Embedder, normalize_rows
from plugformer.report import collect, csv_text, markdown
from plugformer.testing.retrieval_toys import toy_registries
from plugformer.training.retrieval_eval import RETRIEVAL_METRICS, score_pairs, val_pairs

QUERIES = [f"question {i}" for i in range(30)]
POSITIVES = [f"answer {i}" for i in range(30)]


class LookupEmbedder(Embedder):
    """Pair ``i``'s query lands on ``targets[i]``'s one-hot vector, positive ``i`` on its own: ``targets`` the
    identity is a perfect embedder, a permutation one that sends queries to other pairs' positives."""

    def __init__(self, targets: list[int]):
        super().__init__(None)
        self.targets = targets

    @property
    def dim(self) -> int:
        return len(self.targets)

    def identity(self) -> dict[str, Any]:
        return {"name": "lookup"}

    def embed(self, texts, *, role="passage"):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            kind, number = text.split()
            out[row, self.targets[int(number)] if kind == "question" else int(number)] = 1.0
        return normalize_rows(out)


def scores(targets: list[int]) -> dict[str, float]:
    return score_pairs(toy_registries(), {"name": "exact"}, QUERIES, POSITIVES, lambda: LookupEmbedder(targets),
                       dim=len(targets))


def test_a_perfect_embedder_finds_every_positive_first():
    assert scores(list(range(30))) == {"recall@1": 1.0, "recall@10": 1.0, "mrr@10": 1.0}


def test_a_shuffled_embedder_scores_less():
    shuffled = list(range(30))
    random.Random(0).shuffle(shuffled)
    found = scores(shuffled)
    assert set(found) == set(RETRIEVAL_METRICS)
    right = sum(i == t for i, t in enumerate(shuffled)) / 30  # queries the permutation left on their own pair
    assert found["recall@1"] == pytest.approx(right) and found["recall@1"] < 1.0
    assert found["mrr@10"] < 1.0 and found["recall@1"] <= found["mrr@10"] <= found["recall@10"]


def test_a_duplicate_positive_is_one_passage_relevant_to_both_queries():
    found = score_pairs(toy_registries(), {"name": "exact"}, ["question 0", "question 1"], ["answer 0", "answer 0"],
                        lambda: LookupEmbedder([0, 0]), dim=2)
    assert found == {"recall@1": 1.0, "recall@10": 1.0, "mrr@10": 1.0}


def test_a_retriever_that_reads_no_vectors_never_builds_the_embedder():
    from plugformer.interfaces.retrieval import Hit, Retriever

    class NumberRetriever(Retriever):
        """Finds a positive by the number it shares with the query (text only, like bm25)."""

        def __init__(self, config, context):
            super().__init__(config, context)
            self.texts: dict[str, str] = {}

        @property
        def uses_vectors(self) -> bool:
            return False

        def add(self, chunks, vectors):
            self.texts.update((c.id, c.text) for c in chunks)

        def delete(self, ids):
            return 0

        def search(self, texts, vectors, k, **options):
            return [[Hit(i, 1.0) for i, t in self.texts.items() if t.split()[1] == q.split()[1]][:k] for q in texts]

        def ids(self):
            return iter(self.texts)

        def save(self, directory):
            raise NotImplementedError

        @classmethod
        def load(cls, config, context, directory):
            raise NotImplementedError

    regs = toy_registries()
    regs.retriever.register("numbers", NumberRetriever)

    def no_embedder():
        raise AssertionError("a lexical retriever needs no embedder")

    assert score_pairs(regs, {"name": "numbers"}, QUERIES, POSITIVES, no_embedder, dim=8)["recall@1"] == 1.0


class Pairs(TextSource):
    has_records = True

    def __init__(self, val: list[dict[str, Any]]):
        super().__init__(None)
        self.val = val

    def records(self, split):
        yield from (self.val if split == "val" else [])

    def documents(self, split):
        yield "text"

    def fingerprint(self) -> str:
        return "pairs"


def test_held_out_pairs_come_from_the_val_split_or_the_data_is_refused_in_one_line():
    pairs = [{"query": "q1", "positive": "p1", "id": "a"}, {"query": "q2", "positive": "p2"}]
    assert val_pairs(Pairs(pairs), "faiss", "jsonl") == (["q1", "q2"], ["p1", "p2"])
    with pytest.raises(ConfigError, match=r"retriever=bm25 measures retrieval .* data=jsonl holds records that are "
                                          r"not query/positive pairs: use data=stdlib_pairs"):
        val_pairs(Pairs([{"prompt": "x", "response": "y"}]), "bm25", "jsonl")
    with pytest.raises(ConfigError, match="data=jsonl has no held-out"):
        val_pairs(Pairs([]), "bm25", "jsonl")
    with pytest.raises(ConfigError, match="data=stdlib yields plain documents"):
        val_pairs(None, "bm25", "stdlib")


def test_the_report_shows_retrieval_columns_when_a_job_has_them(tmp_path):
    def job(name: str, summary: dict[str, Any]) -> None:
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- {name}\n")
        (tmp_path / name / "summary.json").write_text(json.dumps({"step": 4, "loss": 2.0, "val_loss": 1.5,
                                                                  **summary}))

    job("retriever=bm25", {"val_recall@1": 0.5, "val_recall@10": 0.9, "val_mrr@10": 0.625})
    job("retriever=faiss", {"val_recall@1": 0.25, "val_recall@10": 0.75, "val_mrr@10": 0.375})
    jobs = collect(tmp_path)
    table = markdown(jobs, "t")
    assert "| val_loss | recall@1 | recall@10 | mrr@10 | tokens_per_s |" in table
    assert "| retriever=bm25 | finished | - | 2.0000 | 1.5000 | 0.5000 | 0.9000 | 0.6250 |" in table
    header, *rows = csv_text(jobs).splitlines()
    assert header.startswith("combination,status,params,train_loss,val_loss,recall@1,recall@10,mrr@10,")
    assert any(",0.25,0.75,0.375," in row for row in rows)


def test_a_report_without_retrieval_keeps_its_columns(tmp_path):
    (tmp_path / "a" / ".hydra").mkdir(parents=True)
    (tmp_path / "a" / ".hydra" / "overrides.yaml").write_text("- attention=sdpa\n")
    (tmp_path / "a" / "summary.json").write_text(json.dumps({"step": 4, "loss": 2.0, "val_loss": 1.5}))
    jobs = collect(tmp_path)
    assert "recall" not in markdown(jobs, "t") and "recall" not in csv_text(jobs)
