"""The ``hybrid`` retriever: two retrievers (``first``, ``second``; any registered ones, by default ``bm25`` and
``faiss`` flat) fused by reciprocal rank (:func:`plugformer.interfaces.retrieval.reciprocal_rank_fusion`).

Lexical and dense retrievers fail on different queries (a rare identifier; a paraphrase), and their scores are
not comparable, so fusion works on ranks: each part returns its ``max(k, fetch_k)`` best, and a chunk scores
``weight / (constant + rank)`` summed over the parts that returned it. The parts are built, and loaded, through
the retriever context (the core's one way to build a retriever) and saved into ``first/`` and ``second/``.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plugformer import PlugformerError
from plugformer.interfaces import (
    Chunk,
    Hit,
    Retriever,
    RetrieverContext,
    check_k,
    check_search_options,
    reciprocal_rank_fusion,
)
from plugformer_retrieval.chunk_ids import check_new_ids, some
from plugformer_retrieval.schemas import HybridConfig
from plugformer_retrieval.stored import corrupted

#: the parts, in fusion order; each is saved into the subdirectory of its name
PARTS = ("first", "second")


class HybridRetriever(Retriever):
    """Reciprocal-rank fusion of two retrievers; see the module docstring."""

    def __init__(self, config: HybridConfig, context: RetrieverContext, parts: Sequence[Retriever] | None = None):
        super().__init__(config, context)
        self.parts: tuple[Retriever, ...] = tuple(parts) if parts is not None else tuple(
            context.build(getattr(config, part)) for part in PARTS)
        #: every option a part takes, passed on to the parts that take it
        self.search_options = tuple(dict.fromkeys(o for p in self.parts for o in p.search_options))

    @property
    def exact(self) -> bool:
        """Never: fused ranks are not nearest neighbours by inner product."""
        return False

    @property
    def uses_vectors(self) -> bool:
        return any(part.uses_vectors for part in self.parts)

    @property
    def uses_text(self) -> bool:
        return any(part.uses_text for part in self.parts)

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray | None) -> None:
        """Add to both parts; when the second refuses, the first is rolled back, so they never disagree."""
        check_new_ids([chunk.id for chunk in chunks], set(self.ids()))
        done: list[Retriever] = []
        try:
            for part in self.parts:
                part.add(chunks, vectors if part.uses_vectors else None)
                done.append(part)
        except BaseException:
            for part in done:
                part.delete([chunk.id for chunk in chunks])
            raise

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ``ids`` from both parts; returns how many were present."""
        return max(part.delete(ids) for part in self.parts)

    def search(self, texts: Sequence[str], vectors: np.ndarray | None, k: int, **options: Any) -> list[list[Hit]]:
        """The fused ``k`` best per query; each option goes to the parts that take it."""
        k = check_k(k)
        check_search_options(self, options)
        fetch = max(k, self.config.fetch_k)
        rankings = [part.search(texts, vectors if part.uses_vectors else None, fetch,
                                **{key: value for key, value in options.items() if key in part.search_options})
                    for part in self.parts]
        return [reciprocal_rank_fusion([ranking[row] for ranking in rankings], k, self.config.constant,
                                       self.config.weights)
                for row in range(len(rankings[0]))]

    def ids(self) -> Iterator[str]:
        return self.parts[0].ids()

    def __len__(self) -> int:
        return len(self.parts[0])

    def save(self, directory: Path) -> None:
        """Each part into its own subdirectory: ``first/`` and ``second/``."""
        for name, part in zip(PARTS, self.parts):
            (Path(directory) / name).mkdir()
            part.save(Path(directory) / name)

    @classmethod
    def load(cls, config: HybridConfig, context: RetrieverContext, directory: Path) -> HybridRetriever:
        """Both parts, loaded by the context from ``first/`` and ``second/``; they must hold the same ids."""
        parts = []
        for name in PARTS:
            path = Path(directory) / name
            if not path.is_dir():
                raise corrupted(path, "no such directory")
            parts.append(context.load(getattr(config, name), path))
        first, second = (set(part.ids()) for part in parts)
        if first != second:
            differ = sorted(first ^ second)
            raise PlugformerError(f"hybrid index {directory}: first/ and second/ disagree on {len(differ)} ids "
                                  f"({some(differ)}); rebuild the index")
        return cls(config, context, parts)
