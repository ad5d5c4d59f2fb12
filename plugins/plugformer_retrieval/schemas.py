"""Config schemas of the retrievers (torch-free and library-free, so configs compose without faiss or bm25s)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

from plugformer.config import bounded

#: faiss index types: ``flat`` is exact; the others trade recall for speed (ivf, hnsw) or memory (ivfpq)
FAISS_INDEXES = ("flat", "ivf", "hnsw", "ivfpq")
#: the BM25 variants bm25s implements
BM25_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
#: stop-word lists the bm25 tokenizer can drop (``none``: keep every word; ``en``: bm25s's English list)
STOPWORDS = ("none", "en")


@dataclass
class FaissConfig:
    """A faiss index of unit vectors searched by inner product (cosine similarity)."""

    # flat: exact brute force | ivf: inverted lists over nlist k-means cells | hnsw: a proximity graph |
    # ivfpq: ivf with product-quantized codes (m bytes per vector at nbits=8)
    index: str = "flat"
    nlist: int = bounded(100, ge=1, le=1_000_000)  # ivf/ivfpq: k-means cells (a common choice: ~sqrt(vectors))
    m: int = bounded(8, ge=1, le=1024)  # ivfpq: subquantizers; must divide the vectors' dimension
    nbits: int = bounded(8, ge=1, le=16)  # ivfpq: bits per subquantizer code
    hnsw_m: int = bounded(32, ge=2, le=512)  # hnsw: neighbours per node in the graph
    ef_construction: int = bounded(64, ge=1, le=100_000)  # hnsw: candidate list size while building
    ef_search: int = bounded(64, ge=1, le=100_000)  # hnsw: candidate list size per query (query-time option too)
    nprobe: int = bounded(8, ge=1, le=1_000_000)  # ivf/ivfpq: cells visited per query (query-time option too)
    # ivf/ivfpq: at most this many vectors of the first add (a seeded sample) train the quantizers
    train_size: int = bounded(100_000, ge=1, le=100_000_000)

    def __post_init__(self) -> None:
        if self.index not in FAISS_INDEXES:
            raise ValueError(f"index='{self.index}' is not one of: {', '.join(FAISS_INDEXES)}")


@dataclass
class BM25Config:
    """Okapi BM25 over the chunks' words (bm25s)."""

    k1: float = bounded(1.5, ge=0, le=100)  # term-frequency saturation
    b: float = bounded(0.75, ge=0, le=1)  # document-length normalisation (0: none, 1: full)
    method: str = "lucene"  # lucene | robertson | atire | bm25l | bm25+
    delta: float = bounded(0.5, ge=0, le=100)  # bm25l/bm25+: the lower bound added to term frequencies
    # also index the parts of identifiers: parse_args -> parse, args; ArgumentParser -> argument, parser
    split_identifiers: bool = True
    stopwords: str = "none"  # none | en (drop bm25s's English stop words)

    def __post_init__(self) -> None:
        if self.method not in BM25_METHODS:
            raise ValueError(f"method='{self.method}' is not one of: {', '.join(BM25_METHODS)}")
        if self.stopwords not in STOPWORDS:
            raise ValueError(f"stopwords='{self.stopwords}' is not one of: {', '.join(STOPWORDS)}")


def _default_first() -> Dict[str, Any]:
    return {"name": "bm25"}


def _default_second() -> Dict[str, Any]:
    return {"name": "faiss", "index": "flat"}


@dataclass
class HybridConfig:
    """Reciprocal-rank fusion of two retrievers, each a config node with ``name`` and its options."""

    first: Dict[str, Any] = field(default_factory=_default_first)  # a retriever node, e.g. {name: bm25}
    second: Dict[str, Any] = field(default_factory=_default_second)  # a retriever node, e.g. {name: faiss}
    constant: float = bounded(60.0, gt=0, le=1e6)  # each hit scores weight / (constant + rank)
    weights: List[float] = bounded(default_factory=lambda: [1.0, 1.0], ge=0, le=1e6)  # of first, second
    fetch_k: int = bounded(50, ge=1, le=100_000)  # candidates asked of each part (at least the query's k)

    def __post_init__(self) -> None:
        for part in ("first", "second"):
            node = getattr(self, part)
            if not hasattr(node, "get") or not node.get("name"):
                raise ValueError(f"{part} must be a retriever config node with a name, e.g. {{name: bm25}}; "
                                 f"got {node!r}")
        if len(self.weights) != 2:
            raise ValueError(f"weights must have two numbers (first, second), got {list(self.weights)!r}")
        if not any(w > 0 for w in self.weights):
            raise ValueError(f"weights {list(self.weights)!r}: at least one must be positive")
