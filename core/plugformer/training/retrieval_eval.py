"""How well a training run's model retrieves: ``plugformer train retriever=faiss ...`` (or ``-m retriever=bm25,faiss``).

At the run's final evaluation the held-out query/positive pairs of its data (``stdlib_pairs``' val split, a
``jsonl`` file's held-out records) become a small index: every distinct held-out positive is a passage, every
held-out query searches it, with the train config's ``retriever`` and the run's model as the ``pooled`` embedder
(both built through :mod:`plugformer.retrieval.components`; a retriever that reads no vectors, ``bm25``, needs no
embedder). recall@1, recall@10 and MRR@10 (:func:`plugformer.retrieval.evaluate.score_rankings`, the one
definition) join the final evaluation's metrics as ``val_recall@1``, ``val_recall@10``, ``val_mrr@10``: in
``metrics.jsonl``, ``summary.json`` and so a sweep's report.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugformer.errors import ConfigError

if TYPE_CHECKING:  # importing this module stays torch-free: the sweep report reads RETRIEVAL_METRICS
    from omegaconf import DictConfig

    from plugformer.interfaces import TextSource
    from plugformer.interfaces.retrieval import Embedder
    from plugformer.registry import Registries

#: the figures a train run reports (each as ``val_<name>``), computed by ``score_rankings``
RETRIEVAL_METRICS = ("recall@1", "recall@10", "mrr@10")
#: the embedder that turns a plugformer checkpoint into vectors, as ``plugformer index build embedder=pooled`` does
MODEL_EMBEDDER = "pooled"
#: results searched per query: what recall@10 and MRR@10 read
SEARCH_K = 10


def val_pairs(source: TextSource | None, retriever: str, data: str) -> tuple[list[str], list[str]]:
    """(queries, positives) of ``source``'s held-out (``val``) records, aligned; a source without such pairs is one
    line naming ``retriever`` and ``data``."""
    from plugformer.training.pairs import pair_texts

    def missing(why: str) -> ConfigError:
        return ConfigError(f"retriever={retriever} measures retrieval on the held-out query/positive pairs of the "
                           f"data, and data={data} {why}: use data=stdlib_pairs or data=jsonl data.path=<file of "
                           "{\"query\", \"positive\"} records> (with a val split), or leave retriever unset")

    if source is None or not getattr(source, "has_records", False):
        raise missing("yields plain documents, not records")
    records = list(source.records("val"))
    if not records:
        raise missing("has no held-out (val) records")
    if not all(isinstance(r, dict) and {"query", "positive"} <= r.keys() for r in records):
        raise missing("holds records that are not query/positive pairs")
    pairs = [pair_texts(r, f"val record {i}") for i, r in enumerate(records)]
    return [q for q, _, _ in pairs], [p for _, p, _ in pairs]


def score_pairs(registries: Registries, retriever: Mapping[str, Any], queries: Sequence[str],
                positives: Sequence[str], embedder: Callable[[], Embedder], dim: int) -> dict[str, float]:
    """recall@1, recall@10 and MRR@10 of finding each query's own positive among all ``positives`` (a text that
    appears twice is one passage, relevant to both its queries) with ``retriever`` (a config node) over
    ``dim``-dimensional vectors. ``embedder`` is called only when the retriever reads vectors."""
    from plugformer.interfaces.retrieval import Chunk
    from plugformer.retrieval.components import build_retriever, node_dict
    from plugformer.retrieval.evaluate import LabelledQuery, score_rankings
    from plugformer.retrieval.index import Index

    if len(queries) != len(positives) or not queries:
        raise ConfigError(f"retrieval evaluation needs aligned, non-empty queries and positives, got {len(queries)} "
                          f"and {len(positives)}")
    searcher = build_retriever(registries, retriever, dim)
    vectors = embedder() if searcher.uses_vectors else None
    index = Index(registries, retriever_node=node_dict(retriever), retriever=searcher, embedder_node=None,
                  embedder=vectors)
    ids: dict[str, str] = {}
    for text in positives:
        ids.setdefault(text, f"positive-{len(ids)}")
    index.add([Chunk(chunk_id, text) for text, chunk_id in ids.items()])
    rankings = index.search(list(queries), SEARCH_K)
    labelled = [LabelledQuery(q, frozenset({ids[p]})) for q, p in zip(queries, positives, strict=True)]
    scores = score_rankings(rankings, labelled)
    return {name: scores[name] for name in RETRIEVAL_METRICS}


class HeldOutRetrieval:
    """The retrieval evaluation of one train run (:meth:`from_config`: None when ``retriever`` is unset)."""

    def __init__(self, registries: Registries, retriever: Mapping[str, Any], queries: list[str],
                 positives: list[str], dim: int):
        self.registries, self.retriever, self.dim = registries, dict(retriever), dim
        self.queries, self.positives = queries, positives

    @classmethod
    def from_config(cls, cfg: DictConfig, registries: Registries, source: TextSource | None,
                    world_size: int) -> HeldOutRetrieval | None:
        """Check, before training starts, that ``cfg.retriever`` can run (its name, options and library) on the
        held-out pairs of ``source`` (``cfg.data``'s); None when no retriever is chosen."""
        from plugformer.retrieval.components import build_retriever, node_dict

        node = cfg.get("retriever")
        if node is None:
            return None
        retriever = node_dict(node)
        name = retriever.get("name")
        if world_size > 1:
            raise ConfigError(f"retriever={name} is measured in one process, and parallel={cfg.parallel.name} runs "
                              f"{world_size}: use parallel=single, or leave retriever unset and measure the checkpoint "
                              "with plugformer eval retrieval")
        dim = int(cfg.model.d_model)
        build_retriever(registries, retriever, dim)  # an unknown name, a bad option or a missing library: now
        queries, positives = val_pairs(source, str(name), str(cfg.data.name))
        return cls(registries, retriever, queries, positives, dim)

    def scores(self, model: Any, tokenizer: Any, cfg: DictConfig, device: str, scratch: Path) -> dict[str, float]:
        """``val_recall@1``, ``val_recall@10``, ``val_mrr@10`` of ``model`` (the trained weights, unwrapped). For a
        retriever that reads vectors, the weights are written as a model checkpoint under ``scratch`` (removed
        afterwards) and embedded by the ``pooled`` embedder, exactly as ``plugformer index build embedder=pooled``
        would embed the run's checkpoint."""
        from plugformer.checkpoint import write_model_checkpoint
        from plugformer.retrieval.components import build_embedder

        scratch.mkdir(parents=True, exist_ok=True)
        where = Path(tempfile.mkdtemp(prefix=".retrieval-eval-", dir=scratch))

        def embedder() -> Embedder:
            checkpoint = write_model_checkpoint(where / "model", cfg, model.state_dict(), tokenizer=tokenizer)
            return build_embedder(self.registries, {"name": MODEL_EMBEDDER, "checkpoint": str(checkpoint),
                                                    "device": device})

        try:
            found = score_pairs(self.registries, self.retriever, self.queries, self.positives, embedder, self.dim)
        finally:
            shutil.rmtree(where, ignore_errors=True)
        return {f"val_{name}": value for name, value in found.items()}


__all__ = ["MODEL_EMBEDDER", "RETRIEVAL_METRICS", "HeldOutRetrieval", "score_pairs", "val_pairs"]
