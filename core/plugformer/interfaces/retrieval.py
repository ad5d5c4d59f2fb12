"""Retrieval: embedders turn text into vectors; retrievers find the chunks nearest a query.

The pieces, in the order retrieval-augmented generation uses them:

- :class:`Chunk`: a passage of a document (an id, its text, JSON metadata such as its source);
- :class:`Embedder` (the ``embedder`` family, e.g. ``pooled``, ``wordllama``): texts → unit-length float32
  vectors, one row each. Its :meth:`Embedder.identity` says what determines the vectors, so an index refuses
  a query embedder that differs from the one that built it;
- :class:`Retriever` (the ``retriever`` family, e.g. ``faiss``, ``bm25``, ``hybrid``, ``qdrant``): holds chunk
  ids (and vectors or text), answers ``k`` nearest :class:`Hit` per query, deletes ids, and saves itself into a
  directory in its library's own format plus JSON/safetensors (never pickle);
- :class:`plugformer.retrieval.Index` (not a plugin): one index directory = the manifest, the chunks' text and
  metadata, and one retriever's files. It is the only owner of that layout and writes it atomically.

Vectors cross every interface as numpy ``float32`` arrays of shape ``(n, dim)`` with L2-normalised rows, so
inner product is cosine similarity and every library takes them without a copy.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from plugformer.errors import ConfigError, PlugformerError

if TYPE_CHECKING:
    import numpy as np

#: what a text is embedded as: some embedders encode questions and passages differently (an instruction prefix)
Role = Literal["query", "passage"]
ROLES: tuple[str, ...] = ("query", "passage")


@dataclass(frozen=True)
class Chunk:
    """A passage that can be retrieved: a unique ``id`` (e.g. ``"docs/a.md#3"``), its ``text``, and JSON-able
    ``metadata`` (``source``: the file it came from, ``chunk``: its number there, anything else a loader adds)."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise PlugformerError(f"a chunk id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.text, str):
            raise PlugformerError(f"chunk {self.id!r}: text must be a string, got {type(self.text).__name__}")


@dataclass(frozen=True)
class Hit:
    """One search result: the chunk ``id`` and its ``score``, where a higher score is nearer (inner product of
    unit vectors, a BM25 score, a fused rank score: comparable only within one retriever)."""

    id: str
    score: float


def check_vectors(vectors: Any, rows: int, dim: int | None, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 ``(rows, dim)`` numpy array, or a one-line
    :class:`~plugformer.errors.PlugformerError` saying what is wrong (the shape, NaNs). Retrievers call it at
    their boundary, so a wrong embedder or a mismatched index fails with its numbers, not deep in a library."""
    import numpy as np

    if vectors is None:
        raise PlugformerError(f"{what}: expected a ({rows}, {dim}) float32 array, got None")
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if array.ndim != 2 or array.shape[0] != rows or (dim is not None and array.shape[1] != dim):
        raise PlugformerError(f"{what}: expected shape ({rows}, {dim if dim is not None else 'dim'}), "
                              f"got {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise PlugformerError(f"{what}: contains NaN or infinite values")
    return array


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (float32 ``(n, dim)``) with every row scaled to unit L2 length (an all-zero row stays zero)."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Embedder(ABC):
    """Text → vectors. Construction: ``Cls(config)`` (the entry's schema instance).

    :meth:`embed` takes one batch; :meth:`embed_all` splits any number of texts into batches of
    :attr:`batch_size` with a progress bar. Rows are unit length (:func:`normalize_rows`), float32, and a text's
    vector must not depend on the other texts of its batch (padding is masked).
    """

    #: texts per :meth:`embed` call in :meth:`embed_all` (schemas usually expose it as ``batch_size``)
    batch_size: int = 32

    def __init__(self, config: Any):
        self.config = config
        size = getattr(config, "batch_size", None)
        if size is not None:
            self.batch_size = int(size)

    @property
    @abstractmethod
    def dim(self) -> int:
        """The vectors' dimension."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """A JSON-able description of everything that determines the vectors (the embedder's name, the
        checkpoint's fingerprint or the packaged model's name, the pooling, the dimension). Two embedders with
        equal identities embed alike; an index stores the builder's and refuses a query embedder whose
        identity differs (:func:`identity_mismatch`)."""

    @abstractmethod
    def embed(self, texts: Sequence[str], *, role: Role = "passage") -> np.ndarray:
        """One batch: float32 ``(len(texts), dim)``, rows unit length. ``role`` says whether the texts are
        queries or passages (embedders that treat both alike ignore it)."""

    def embed_all(self, texts: Sequence[str], *, role: Role = "passage", progress: bool = False,
                  description: str = "embedding") -> np.ndarray:
        """All ``texts`` in batches of :attr:`batch_size`, as one float32 ``(len(texts), dim)`` array; with
        ``progress`` a tqdm bar counts texts on stderr."""
        import numpy as np

        if role not in ROLES:
            raise ConfigError(f"embedding role {role!r} is not one of {', '.join(ROLES)}")
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        bar = None
        if progress and texts:
            from tqdm import tqdm

            bar = tqdm(total=len(texts), desc=description, unit="text", leave=False)
        try:
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start:start + self.batch_size]
                out[start:start + len(batch)] = check_vectors(self.embed(batch, role=role), len(batch), self.dim,
                                                              f"{type(self).__name__}.embed")
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        return out


def identity_mismatch(built_with: Mapping[str, Any] | None, query: Mapping[str, Any] | None) -> str | None:
    """Why an index built with embedder identity ``built_with`` cannot be queried with ``query`` (None when it
    can): one line naming the first field that differs."""
    if built_with is None and query is None:
        return None
    if built_with is None:
        return "the index was built without an embedder (a lexical retriever), but a query embedder was given"
    if query is None:
        return f"the index was built with embedder {dict(built_with).get('name')!r}; give the same embedder to query it"
    for key in sorted(set(built_with) | set(query)):
        if built_with.get(key) != query.get(key):
            return (f"the index was built with embedder {key}={built_with.get(key)!r}, but the query embedder has "
                    f"{key}={query.get(key)!r}")
    return None


@dataclass(frozen=True)
class RetrieverContext:
    """What a retriever is built with besides its config: the vectors' dimension (None when the index has no
    embedder: a lexical retriever) and how to build or load a nested retriever from a config node (``hybrid``
    fuses two)."""

    dim: int | None
    build: Callable[[Any], Retriever]
    load: Callable[[Any, Path], Retriever]


class Retriever(ABC):
    """Chunk ids in, nearest ids out. Construction: ``Cls(config, context)`` (a :class:`RetrieverContext`);
    a saved one comes back with ``Cls.load(config, context, directory)``.

    A retriever stores only what it searches with (vectors, or tokenized text) and the chunk ids; the chunks'
    text and metadata belong to the index. Every method takes the texts and the vectors of its chunks or
    queries; a retriever reads the one it needs (:attr:`uses_vectors`, :attr:`uses_text`).

    Contract (the conformance kit checks each): ``search`` returns at most ``k`` hits per query, best first,
    without duplicates; an exact index (capability ``exact``) returns the true nearest neighbours by inner
    product; a deleted id is never returned again; ``save`` then ``load`` returns the same hits; adding an id
    that is already present is an error naming it (delete it first: re-indexing a changed file does).
    """

    #: names of the ``**options`` :meth:`search` accepts (e.g. ``nprobe``, ``ef_search``), checked by the core
    search_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any, context: RetrieverContext):
        self.config = config
        self.context = context

    @property
    def dim(self) -> int | None:
        return self.context.dim

    @property
    def uses_vectors(self) -> bool:
        """True when :meth:`add` and :meth:`search` read the vectors (a dense index needs an embedder)."""
        return True

    @property
    def exact(self) -> bool:
        """True when :meth:`search` returns the true ``k`` nearest neighbours by inner product (a flat index).
        The entry's ``exact`` capability says it for every configuration; this says it for this one
        (``faiss`` with ``index=flat``), and the conformance kit holds an exact instance to it."""
        return False

    @property
    def uses_text(self) -> bool:
        """True when :meth:`add` and :meth:`search` read the texts (a lexical index)."""
        return False

    @abstractmethod
    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray | None) -> None:
        """Index ``chunks`` (with their ``(len(chunks), dim)`` vectors when :attr:`uses_vectors`). Indexes that
        need training (IVF, PQ) train on what they are first given, or refuse with one line saying how many
        vectors they need."""

    @abstractmethod
    def delete(self, ids: Sequence[str]) -> int:
        """Remove ``ids`` (unknown ids are ignored); returns how many were present."""

    @abstractmethod
    def search(self, texts: Sequence[str], vectors: np.ndarray | None, k: int,
               **options: Any) -> list[list[Hit]]:
        """The ``k`` best hits for each query, best first. ``options`` are search-time knobs named in
        :attr:`search_options` (the core refuses others before calling)."""

    @abstractmethod
    def ids(self) -> Iterator[str]:
        """Every id indexed, in no particular order."""

    def __len__(self) -> int:
        return sum(1 for _ in self.ids())

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything :meth:`load` needs into ``directory`` (exists, empty): the library's own index
        format plus JSON/safetensors; never pickle. The index around it makes the whole write atomic."""

    @classmethod
    @abstractmethod
    def load(cls, config: Any, context: RetrieverContext, directory: Path) -> Retriever:
        """The retriever :meth:`save` wrote into ``directory``. A missing or corrupted file is a one-line
        :class:`~plugformer.errors.PlugformerError` naming it."""


def check_search_options(retriever: Retriever, options: Mapping[str, Any]) -> None:
    """Refuse a search option the retriever does not have, naming the valid ones."""
    for key in options:
        if key not in retriever.search_options:
            valid = ", ".join(retriever.search_options) or "none"
            raise ConfigError(f"search option {key!r} is not one of {type(retriever).__name__}'s: {valid}")


def check_k(k: Any) -> int:
    """``k`` as a positive int, or a one-line :class:`~plugformer.errors.ConfigError`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    return k


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int, constant: float = 60.0,
                           weights: Sequence[float] | None = None) -> list[Hit]:
    """Fuse ranked hit lists into one: each id scores ``sum(w / (constant + rank))`` over the lists it appears in
    (rank from 1), best ``k`` first, ties broken by id. The standard way to combine a lexical and a dense
    retriever whose scores are not comparable."""
    if constant <= 0 or not math.isfinite(constant):
        raise ConfigError(f"reciprocal-rank-fusion constant must be a positive number, got {constant!r}")
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ConfigError(f"got {len(weights)} weights for {len(rankings)} rankings")
    scores: dict[str, float] = {}
    for weight, ranking in zip(weights, rankings):
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + weight / (constant + rank)
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [Hit(id_, score) for id_, score in best]


__all__ = ["ROLES", "Chunk", "Embedder", "Hit", "Retriever", "RetrieverContext", "Role", "check_k",
           "check_search_options", "check_vectors", "identity_mismatch", "normalize_rows", "reciprocal_rank_fusion"]
