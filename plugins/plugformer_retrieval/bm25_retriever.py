"""The ``bm25`` retriever: Okapi BM25 over the chunks' words, scored by the bm25s library.

bm25s indexes a fixed corpus (its scores bake in each word's document frequency), so the retriever keeps every
chunk's tokens and re-indexes the whole corpus after adds or deletes, once, at the next search or save: linear in
the corpus (about 1 s per 1000 chunks of 150 words on a busy 2-core machine), fine for the knowledge bases this
project builds, and the scores always reflect the current corpus.

Saved as bm25s's own files (numpy arrays without pickle, JSON vocabulary and parameters) in ``bm25s/``, plus
``corpus.json`` (ids and tokens) so a loaded index can still grow and shrink.

Hits are the chunks sharing at least one word with the query, best first: a chunk without a query word is never
returned, so ``hybrid`` does not fuse in arbitrary zero-score chunks.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import bm25s
import numpy as np

from plugformer import PlugformerError
from plugformer.interfaces import Chunk, Hit, Retriever, RetrieverContext, check_k, check_search_options
from plugformer_retrieval.chunk_ids import check_new_ids
from plugformer_retrieval.lexical_tokens import tokenize_all
from plugformer_retrieval.schemas import BM25Config
from plugformer_retrieval.stored import corrupted, read_json, require_dir, write_json

# bm25s sets its own logger to DEBUG, so every index build would print a debug line under the CLI's logging
logging.getLogger("bm25s").setLevel(logging.WARNING)

MODEL_DIR = "bm25s"
CORPUS_FILE = "corpus.json"
#: the files bm25s writes into MODEL_DIR (checked one by one when it cannot load them, to name the bad one)
MODEL_FILES = ("params.index.json", "vocab.index.json", "data.csc.index.npy", "indices.csc.index.npy",
               "indptr.csc.index.npy")


class BM25Retriever(Retriever):
    """Lexical retrieval; see the module docstring."""

    def __init__(self, config: BM25Config, context: RetrieverContext):
        super().__init__(config, context)
        self._ids: list[str] = []
        self._tokens: list[list[str]] = []
        self._model: Any = None  # a bm25s.BM25 over the current corpus; None while it is empty
        self._stale = False  # chunks were added or deleted since the model was built
        self._stopwords = frozenset(bm25s.stopwords.STOPWORDS_EN) if config.stopwords == "en" else frozenset()

    @property
    def uses_vectors(self) -> bool:
        return False

    @property
    def uses_text(self) -> bool:
        return True

    def tokens(self, texts: Sequence[str]) -> list[list[str]]:
        """The words of each text as this retriever indexes and queries them."""
        return tokenize_all(texts, split_identifiers=self.config.split_identifiers, stopwords=self._stopwords)

    def _new_model(self) -> Any:
        config = self.config
        return bm25s.BM25(k1=config.k1, b=config.b, delta=config.delta, method=config.method, backend="numpy")

    def _current_model(self) -> Any:
        """The bm25s model of the current corpus (None when empty), re-indexed if chunks changed since."""
        if self._stale:
            self._model = None
            if self._ids:
                model = self._new_model()
                model.index(self._tokens, show_progress=False)
                self._model = model
            self._stale = False
        return self._model

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray | None) -> None:
        """Index the chunks' texts (``vectors`` are not read); the corpus is re-indexed at the next search."""
        ids = [chunk.id for chunk in chunks]
        check_new_ids(ids, set(self._ids))
        if not ids:
            return
        self._ids += ids
        self._tokens += self.tokens([chunk.text for chunk in chunks])
        self._stale = True

    def delete(self, ids: Sequence[str]) -> int:
        """Remove ``ids`` (unknown ones ignored); returns how many were present."""
        gone = set(ids)
        keep = [i for i, id_ in enumerate(self._ids) if id_ not in gone]
        removed = len(self._ids) - len(keep)
        if removed:
            self._ids = [self._ids[i] for i in keep]
            self._tokens = [self._tokens[i] for i in keep]
            self._stale = True
        return removed

    def search(self, texts: Sequence[str], vectors: np.ndarray | None, k: int, **options: Any) -> list[list[Hit]]:
        """The ``k`` best-scoring chunks sharing a word with each query text (``vectors`` are not read)."""
        k = check_k(k)
        check_search_options(self, options)
        model = self._current_model()
        return [self._search_one(model, tokens, k) for tokens in self.tokens(list(texts))]

    def _search_one(self, model: Any, tokens: list[str], k: int) -> list[Hit]:
        word_ids = model.get_tokens_ids(tokens) if model is not None else []
        if not word_ids:
            return []
        scores = model.get_scores_from_ids(word_ids)
        indptr, indices = model.scores["indptr"], model.scores["indices"]
        matched = np.zeros(len(self._ids), dtype=bool)
        for word in set(word_ids):
            matched[indices[indptr[word]:indptr[word + 1]]] = True
        candidates = np.flatnonzero(matched)
        best = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
        return [Hit(self._ids[i], float(scores[i])) for i in best]

    def ids(self) -> Iterator[str]:
        return iter(list(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def save(self, directory: Path) -> None:
        """``corpus.json`` (ids and tokens) and, when there are chunks, bm25s's own files in ``bm25s/``."""
        directory = Path(directory)
        write_json(directory / CORPUS_FILE, {"ids": self._ids, "tokens": self._tokens})
        model = self._current_model()
        if model is not None:
            model.save(str(directory / MODEL_DIR), show_progress=False)

    @classmethod
    def load(cls, config: BM25Config, context: RetrieverContext, directory: Path) -> BM25Retriever:
        """The retriever :meth:`save` wrote; re-indexed from the saved tokens when the config's BM25 parameters
        differ from the saved ones. A missing or corrupted file is one line naming it."""
        directory = Path(directory)
        retriever = cls(config, context)
        corpus_path = directory / CORPUS_FILE
        corpus = read_json(corpus_path, ("ids", "tokens"))
        ids, tokens = corpus["ids"], corpus["tokens"]
        if (not isinstance(ids, list) or not isinstance(tokens, list) or len(ids) != len(tokens)
                or not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids)
                or not all(isinstance(t, list) and all(isinstance(w, str) for w in t) for t in tokens)):
            raise corrupted(corpus_path, "expected as many unique string ids as token lists")
        retriever._ids, retriever._tokens = ids, tokens
        if ids:
            retriever._model = _load_model(require_dir(directory / MODEL_DIR), len(ids))
            saved = (retriever._model.k1, retriever._model.b, retriever._model.delta, retriever._model.method)
            retriever._stale = saved != (config.k1, config.b, config.delta, config.method)
        return retriever


def _load_model(directory: Path, documents: int) -> Any:
    """bm25s's saved index of ``documents`` chunks, or a one-line error naming the file it cannot read."""
    try:
        model = bm25s.BM25.load(str(directory), mmap=False, show_progress=False)
    except Exception as exc:  # noqa: BLE001 - any failure of the library's reader is a bad file; find which
        raise _bad_model_file(directory, exc) from None
    if model.scores.get("num_docs") != documents:
        raise corrupted(directory / "params.index.json",
                        f"it indexes {model.scores.get('num_docs')} chunks, {CORPUS_FILE} lists {documents}")
    return model


def _bad_model_file(directory: Path, exc: Exception) -> PlugformerError:
    import json

    for name in MODEL_FILES:
        path = directory / name
        try:
            if name.endswith(".json"):
                json.loads(path.read_text(encoding="utf-8"))
            else:
                np.load(path, allow_pickle=False)
        except Exception as problem:  # noqa: BLE001 - this is the file the library could not read
            return corrupted(path, problem)
    return corrupted(directory, exc)
