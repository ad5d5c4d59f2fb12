"""The ``faiss`` retriever: unit vectors in a faiss index, searched by inner product (cosine similarity).

Index types (``index=``):

- ``flat``: every vector compared with the query; exact (:attr:`FaissRetriever.exact`).
- ``ivf``: vectors in ``nlist`` k-means cells; a query visits the ``nprobe`` nearest cells.
- ``hnsw``: a navigable small-world graph; a query walks it with a candidate list of ``ef_search``.
- ``ivfpq``: ``ivf`` storing product-quantized codes (``m`` subquantizers of ``nbits``) instead of vectors.

Chunk ids are strings; faiss stores int64 labels, mapped by a :class:`~plugformer_retrieval.chunk_ids.LabelMap`
saved as JSON beside the index (``faiss.index``, written by ``faiss.write_index``). ``ivf``/``ivfpq`` train
their quantizers on (a seeded sample of) the first add, which must hold at least as many vectors as they have
centroids. Deletion removes vectors, except from ``hnsw``, whose graph cannot drop nodes: deleted labels become
tombstones that every search excludes inside faiss (an ``IDSelector``, so a query still gets ``k`` live hits),
and the graph is rebuilt from the live vectors once tombstones outnumber them.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from plugformer import ConfigError, PlugformerError
from plugformer.interfaces import (
    Chunk,
    Hit,
    Retriever,
    RetrieverContext,
    check_k,
    check_search_options,
    check_vectors,
)
from plugformer_retrieval.chunk_ids import LabelMap, check_new_ids
from plugformer_retrieval.schemas import FaissConfig
from plugformer_retrieval.stored import corrupted, read_json, write_json

INDEX_FILE = "faiss.index"
STATE_FILE = "faiss.json"
#: the search-time options each index type takes
SEARCH_OPTIONS = {"flat": (), "ivf": ("nprobe",), "ivfpq": ("nprobe",), "hnsw": ("ef_search",)}
#: the faiss class holding the vectors of each index type (flat and hnsw inside an IndexIDMap2)
INDEX_TYPES = {"flat": "IndexFlatIP", "hnsw": "IndexHNSWFlat", "ivf": "IndexIVFFlat", "ivfpq": "IndexIVFPQ"}
#: seed of the sample the quantizers are trained on
TRAIN_SEED = 0


class FaissRetriever(Retriever):
    """Dense retrieval with faiss; see the module docstring for the index types."""

    def __init__(self, config: FaissConfig, context: RetrieverContext):
        super().__init__(config, context)
        if context.dim is None:
            raise ConfigError("retriever 'faiss' searches vectors: it needs an embedder (embedder=...)")
        if config.index == "ivfpq" and context.dim % config.m:
            divisors = [d for d in range(1, min(context.dim, 64) + 1) if context.dim % d == 0]
            raise ConfigError(f"retriever.m={config.m} must divide the vectors' dimension {context.dim} "
                              f"(ivfpq); choices: {', '.join(map(str, divisors))}")
        if config.index in ("ivf", "ivfpq") and config.train_size < self.vectors_to_train:
            raise ConfigError(f"retriever.train_size={config.train_size} is below the {self.vectors_to_train} "
                              f"vectors index={config.index} needs to train")
        self.search_options = SEARCH_OPTIONS[config.index]
        self._index = self._new_index()
        self._labels = LabelMap()
        self._tombstones: set[int] = set()

    @property
    def exact(self) -> bool:
        """True for ``index=flat``: the true nearest neighbours by inner product. The entry cannot declare the
        ``exact`` capability, since the same entry configured as ivf/hnsw/ivfpq is approximate."""
        return self.config.index == "flat"

    @property
    def tombstones(self) -> int:
        """Deleted hnsw vectors still in the graph: every search excludes them, and the graph is rebuilt without
        them once they outnumber the live ones."""
        return len(self._tombstones)

    @property
    def vectors_to_train(self) -> int:
        """How many vectors the first add must hold (0: the index needs no training)."""
        if self.config.index == "ivf":
            return self.config.nlist
        if self.config.index == "ivfpq":
            return max(self.config.nlist, 2 ** self.config.nbits)
        return 0

    def _new_index(self) -> Any:
        config, dim = self.config, self.context.dim
        metric = faiss.METRIC_INNER_PRODUCT
        if config.index == "flat":
            return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if config.index == "hnsw":
            graph = faiss.IndexHNSWFlat(dim, config.hnsw_m, metric)
            graph.hnsw.efConstruction = config.ef_construction
            graph.hnsw.efSearch = config.ef_search
            return faiss.IndexIDMap2(graph)
        if config.index == "ivf":  # inverted lists store their own labels and support removal
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, config.nlist, metric)
        else:
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, config.nlist, config.m, config.nbits, metric)
        index.nprobe = config.nprobe
        return index

    # -- adding and deleting -------------------------------------------------------------------------------

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray | None) -> None:
        """Index ``chunks`` with their vectors; the first add of ivf/ivfpq trains them (see the module)."""
        ids = [chunk.id for chunk in chunks]
        check_new_ids(ids, self._labels)
        vectors = check_vectors(vectors, len(ids), self.dim, "faiss: chunk vectors")
        if not ids:
            return
        if not self._index.is_trained:
            self._train(vectors)
        labels = np.asarray(self._labels.reserve(len(ids)), dtype=np.int64)
        self._index.add_with_ids(vectors, labels)
        self._labels.assign(ids)

    def _train(self, vectors: np.ndarray) -> None:
        needed = self.vectors_to_train
        if len(vectors) < needed:
            what = f"nlist={self.config.nlist}" + (f", nbits={self.config.nbits}" if self.config.index == "ivfpq"
                                                   else "")
            raise PlugformerError(f"faiss index={self.config.index} ({what}) trains on the first add, which needs "
                                  f"at least {needed} vectors; got {len(vectors)}: add more at once, lower "
                                  "retriever.nlist/nbits, or use retriever.index=flat")
        sample = vectors
        if len(vectors) > self.config.train_size:
            rows = np.random.default_rng(TRAIN_SEED).choice(len(vectors), self.config.train_size, replace=False)
            sample = vectors[np.sort(rows)]
        self._index.train(sample)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ``ids`` (unknown ones ignored); returns how many were present."""
        labels = self._labels.labels(list(dict.fromkeys(ids)))
        if not labels:
            return 0
        if self.config.index == "hnsw":
            self._tombstones.update(labels)
            self._labels.discard(labels)
            if len(self._tombstones) > len(self._labels):
                self._compact()
            return len(labels)
        removed = self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(labels, dtype=np.int64)))
        if removed != len(labels):
            raise PlugformerError(f"faiss removed {removed} of {len(labels)} vectors: the index and its id map "
                                  "disagree; rebuild the index")
        self._labels.discard(labels)
        return len(labels)

    def _compact(self) -> None:
        """Rebuild the hnsw graph from the live vectors, dropping the tombstones."""
        live = np.asarray(self._labels.labels(list(self._labels)), dtype=np.int64)
        vectors = [self._index.reconstruct(int(label)) for label in live]
        self._index = self._new_index()
        if vectors:
            self._index.add_with_ids(np.ascontiguousarray(np.vstack(vectors), dtype=np.float32), live)
        self._tombstones.clear()

    # -- searching -------------------------------------------------------------------------------------------

    def search(self, texts: Sequence[str], vectors: np.ndarray | None, k: int, **options: Any) -> list[list[Hit]]:
        """The ``k`` nearest chunks of each query vector by inner product, best first. Options: ``nprobe``
        (ivf, ivfpq) and ``ef_search`` (hnsw) override the config for this search."""
        k = check_k(k)
        check_search_options(self, options)
        queries = len(texts) if texts is not None else (0 if vectors is None else len(vectors))
        vectors = check_vectors(vectors, queries, self.dim, "faiss: query vectors")
        if not len(self._labels) or not queries:
            return [[] for _ in range(queries)]
        scores, labels = self._index.search(vectors, min(k, self._index.ntotal), params=self._params(options))
        hits = []
        for row_scores, row_labels in zip(scores, labels):
            row = []
            for score, label in zip(row_scores, row_labels):
                id_ = self._labels.id_of(int(label))
                if id_ is not None:
                    row.append(Hit(id_, float(score)))
            hits.append(row[:k])
        return hits

    def _params(self, options: dict[str, Any]) -> Any:
        for key, value in options.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"search option {key} must be a positive integer, got {value!r}")
        if self.config.index == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=int(options.get("ef_search", self.config.ef_search)))
            if self._tombstones:  # deleted labels are skipped inside the graph walk
                batch = faiss.IDSelectorBatch(np.asarray(sorted(self._tombstones), dtype=np.int64))
                params.sel = faiss.IDSelectorNot(batch)
                params.referenced_objects = [batch, params.sel]  # the C++ pointers must outlive the search
            return params
        if self.config.index in ("ivf", "ivfpq"):
            return faiss.SearchParametersIVF(nprobe=int(options.get("nprobe", self.config.nprobe)))
        return None

    def ids(self) -> Iterator[str]:
        return iter(list(self._labels))

    def __len__(self) -> int:
        return len(self._labels)

    # -- persistence -----------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """``faiss.index`` (faiss's own format) and ``faiss.json`` (the id map, tombstones, type, dimension)."""
        directory = Path(directory)
        faiss.write_index(self._index, str(directory / INDEX_FILE))
        write_json(directory / STATE_FILE, {"index": self.config.index, "dim": self.dim,
                                            "tombstones": sorted(self._tombstones), **self._labels.to_json()})

    @classmethod
    def load(cls, config: FaissConfig, context: RetrieverContext, directory: Path) -> FaissRetriever:
        """The retriever :meth:`save` wrote; a missing, corrupted or mismatched file is one line naming it."""
        directory = Path(directory)
        retriever = cls(config, context)
        state_path, index_path = directory / STATE_FILE, directory / INDEX_FILE
        state = read_json(state_path, ("index", "dim", "tombstones", "labels", "next_label"))
        if state["index"] != config.index or state["dim"] != context.dim:
            raise PlugformerError(f"{state_path} holds a faiss index={state['index']} of dimension {state['dim']}, "
                                  f"but the config asks for index={config.index} of dimension {context.dim}")
        try:
            labels = LabelMap.from_json(state)
            tombstones = {int(t) for t in state["tombstones"]}
        except (TypeError, ValueError) as exc:
            raise corrupted(state_path, exc) from None
        if not index_path.is_file():
            raise corrupted(index_path, "no such file")
        try:
            index = faiss.read_index(str(index_path))
        except RuntimeError as exc:
            raise corrupted(index_path, str(exc).split("\n")[0][-200:]) from None
        if index.d != context.dim or index.ntotal != len(labels) + len(tombstones):
            raise corrupted(index_path, f"it holds {index.ntotal} vectors of dimension {index.d}; {state_path.name} "
                                        f"lists {len(labels)} ids and {len(tombstones)} tombstones of dimension "
                                        f"{context.dim}")
        expected, wrapped = INDEX_TYPES[config.index], config.index in ("flat", "hnsw")
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
        if wrapped != isinstance(index, faiss.IndexIDMap2) or type(inner).__name__ != expected:
            raise corrupted(index_path, f"it holds a {type(index).__name__} of {type(inner).__name__}, not the "
                                        f"{expected} of index={config.index}")
        retriever._index, retriever._labels, retriever._tombstones = index, labels, tombstones
        return retriever
