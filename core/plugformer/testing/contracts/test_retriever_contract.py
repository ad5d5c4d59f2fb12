"""Retriever contract, on a kit-local corpus of 300 chunks (seeded): vectors in 10 clusters of dimension 32,
each text a unique made-up word plus common ones, so a query with a chunk's own word and vector should find it,
lexically or densely.

Every retriever: hits are at most ``k`` per query, best first, without duplicates, all indexed ids; a chunk's own
text and vector find it (top 10, for at least 90% of queries); incremental adds are searchable; a deleted id is
never returned again (and can be added back); ``save`` then ``load`` gives the same ids and hits, in plain files
(no pickle), and the loaded retriever still grows; adding a present id is a one-line error naming it and changes
nothing; an empty retriever returns no hits (and saves and loads); a retriever reading vectors refuses a wrong
shape in one line. An exact retriever (capability ``exact``, or an ``exact`` property true on the configured
instance, as ``faiss`` with ``index=flat``) returns the true nearest neighbours by inner product.

The checks are plain functions of a :class:`KitRetriever`, so a plugin's own tests can hold non-default
configurations (``faiss`` ivf/hnsw/ivfpq) to the same contract.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plugformer.errors import PlugformerError, UnavailableError
from plugformer.interfaces.retrieval import Chunk, Hit, Retriever
from plugformer.registry import Entry
from plugformer.testing.construct import config_for, label, registries

contract = pytest.mark.plugformer_contract

DIM, CHUNKS, CLUSTERS, SEED = 32, 300, 10, 0
COMMON = ("alpha", "river", "stone", "music", "garden", "window", "silver", "market", "winter", "paper", "engine",
          "forest", "yellow", "bridge", "castle", "planet", "rocket", "shadow", "thunder", "velvet")
QUERIES = tuple(range(0, CHUNKS, 10))  # the chunks whose own text and vector are used as queries


def unique_word(i: int) -> str:
    """A made-up lower-case word for chunk ``i`` (letters only: one token for any word tokenizer)."""
    letters = ""
    for _ in range(3):
        i, digit = divmod(i, 26)
        letters += chr(ord("a") + digit)
    return "zq" + letters


def kit_corpus() -> tuple[list[Chunk], np.ndarray]:
    """The kit's chunks and their unit vectors (float32 (300, 32)), the same on every call."""
    rng = np.random.default_rng(SEED)
    centers = rng.standard_normal((CLUSTERS, DIM))
    vectors = centers[rng.integers(0, CLUSTERS, CHUNKS)] + 0.6 * rng.standard_normal((CHUNKS, DIM))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    chunks = [Chunk(f"doc{i // 10}.md#{i % 10}", " ".join([unique_word(i), *rng.choice(COMMON, 6)]),
                    {"source": f"doc{i // 10}.md", "chunk": i % 10}) for i in range(CHUNKS)]
    return chunks, vectors


@dataclasses.dataclass(frozen=True)
class KitRetriever:
    """How a check gets the retriever under test: ``new()`` an empty one, ``load(directory)`` a saved one, and
    ``what`` starts every failure message."""

    new: Callable[[], Retriever]
    load: Callable[[Path], Retriever]
    what: str
    exact: bool = False  # declared exact by its entry's capabilities


def kit_retriever(entry: Entry, **overrides: Any) -> KitRetriever:
    """The entry built as the core builds it (schema defaults, then ``overrides``) for DIM-dimensional vectors;
    skipped when a part it needs (a nested retriever's library) is unavailable here."""
    from plugformer.retrieval import retriever_context

    context = retriever_context(registries(), DIM)
    config = config_for(entry, **overrides)
    what = label(entry, **overrides)

    def new() -> Retriever:
        try:
            retriever = entry.load()(config, context)
        except UnavailableError as exc:
            pytest.skip(f"{what}: {exc}")
        assert isinstance(retriever, Retriever), f"{what}: builds a {type(retriever).__name__}, not a Retriever"
        return retriever

    return KitRetriever(new, lambda directory: entry.load().load(config, context, directory), what,
                        bool(entry.capabilities.get("exact")))


def _query(retriever: Retriever, chunks: list[Chunk], vectors: np.ndarray, rows: Any, k: int,
           **options: Any) -> list[list[Hit]]:
    rows = list(rows)
    return retriever.search([chunks[i].text.split()[0] for i in rows], vectors[rows], k, **options)


def _filled(kit: KitRetriever) -> tuple[Retriever, list[Chunk], np.ndarray]:
    chunks, vectors = kit_corpus()
    retriever = kit.new()
    retriever.add(chunks, vectors)
    return retriever, chunks, vectors


def _one_line(error: BaseException, what: str) -> str:
    text = str(error)
    assert text and "\n" not in text, f"{what}: the error is not one line: {text!r}"
    return text


def check_reads_vectors_or_text(kit: KitRetriever) -> None:
    retriever = kit.new()
    assert retriever.uses_vectors or retriever.uses_text, f"{kit.what}: reads neither vectors nor text"
    assert len(retriever) == 0 and list(retriever.ids()) == [], f"{kit.what}: a new retriever is not empty"


def check_hits_are_at_most_k_distinct_and_best_first(kit: KitRetriever) -> None:
    retriever, chunks, vectors = _filled(kit)
    indexed = {chunk.id for chunk in chunks}
    for k in (1, 5, CHUNKS + 7):
        results = _query(retriever, chunks, vectors, QUERIES, k)
        assert len(results) == len(QUERIES), f"{kit.what}: {len(results)} hit lists for {len(QUERIES)} queries"
        for row, hits in zip(QUERIES, results):
            where = f"{kit.what}: query {row} with k={k}"
            assert len(hits) <= k, f"{where}: {len(hits)} hits"
            assert all(isinstance(h, Hit) and isinstance(h.score, float) and math.isfinite(h.score) for h in hits), \
                f"{where}: hits are not Hits with finite float scores: {hits[:3]}"
            ids = [h.id for h in hits]
            assert len(set(ids)) == len(ids), f"{where}: duplicate ids {ids}"
            assert set(ids) <= indexed, f"{where}: ids never indexed: {sorted(set(ids) - indexed)[:3]}"
            scores = [h.score for h in hits]
            assert all(a >= b - 1e-6 for a, b in zip(scores, scores[1:])), f"{where}: not best first: {scores}"


def check_a_chunk_is_found_by_its_own_text_and_vector(kit: KitRetriever) -> None:
    retriever, chunks, vectors = _filled(kit)
    _expect_found(retriever, chunks, vectors, QUERIES, kit.what)


def _expect_found(retriever: Retriever, chunks: list[Chunk], vectors: np.ndarray, rows: Any, what: str,
                  **options: Any) -> float:
    rows = list(rows)
    results = _query(retriever, chunks, vectors, rows, 10, **options)
    found = [chunks[i].id in {h.id for h in hits} for i, hits in zip(rows, results)]
    recall = sum(found) / len(found)
    missed = [chunks[i].id for i, ok in zip(rows, found) if not ok]
    assert recall >= 0.9, f"{what}: only {recall:.0%} of chunks are in the top 10 for their own text and " \
                          f"vector (missed {missed[:5]})"
    return recall


def check_exact_neighbours(kit: KitRetriever) -> None:
    retriever, chunks, vectors = _filled(kit)
    exact = getattr(retriever, "exact", None)
    if kit.exact:
        assert exact in (None, True), f"{kit.what}: declares the exact capability, but its exact property is False"
    elif not exact:
        pytest.skip(f"{kit.what} is not exact (no exact capability, exact property {exact!r})")
    rng = np.random.default_rng(SEED + 1)
    queries = vectors[list(QUERIES)] + 0.3 * rng.standard_normal((len(QUERIES), DIM)).astype(np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    texts = [chunks[i].text.split()[0] for i in QUERIES]
    scores = queries @ vectors.T
    for row, hits in enumerate(retriever.search(texts, queries, 10)):
        best = np.argsort(-scores[row], kind="stable")[:10]
        assert [h.id for h in hits] == [chunks[i].id for i in best], \
            f"{kit.what}: query {row}: got {[h.id for h in hits]}, the true nearest by inner product are " \
            f"{[chunks[i].id for i in best]}"
        assert np.allclose([h.score for h in hits], scores[row][best], atol=1e-4), \
            f"{kit.what}: query {row}: scores {[h.score for h in hits]} are not the inner products " \
            f"{scores[row][best].tolist()}"


def check_incremental_adds_are_searchable(kit: KitRetriever) -> None:
    chunks, vectors = kit_corpus()
    retriever = kit.new()
    half = CHUNKS // 2
    retriever.add(chunks[:half], vectors[:half])
    retriever.add(chunks[half:], vectors[half:])
    assert len(retriever) == CHUNKS and set(retriever.ids()) == {c.id for c in chunks}, \
        f"{kit.what}: after two adds it holds {len(retriever)} ids, not {CHUNKS}"
    _expect_found(retriever, chunks, vectors, range(half + 5, CHUNKS, 10), f"{kit.what} (second add)")
    _expect_found(retriever, chunks, vectors, range(5, half, 10), f"{kit.what} (first add)")


def check_deleted_ids_are_never_returned(kit: KitRetriever) -> None:
    retriever, chunks, vectors = _filled(kit)
    doomed = list(QUERIES[:10])
    ids = [chunks[i].id for i in doomed]
    assert retriever.delete([*ids, "no-such-chunk"]) == len(ids), \
        f"{kit.what}: delete does not count the {len(ids)} present ids"
    assert retriever.delete(ids) == 0, f"{kit.what}: deleting twice counts them again"
    assert len(retriever) == CHUNKS - len(ids) and not set(ids) & set(retriever.ids()), \
        f"{kit.what}: deleted ids are still listed"
    for hits in _query(retriever, chunks, vectors, doomed, CHUNKS):
        returned = set(ids) & {h.id for h in hits}
        assert not returned, f"{kit.what}: deleted ids returned: {sorted(returned)}"
    _expect_found(retriever, chunks, vectors, QUERIES[10:], f"{kit.what} (after deleting others)")
    retriever.add([chunks[doomed[0]]], vectors[[doomed[0]]])  # replacing a chunk: delete, then add
    assert ids[0] in {h.id for h in _query(retriever, chunks, vectors, doomed[:1], 10)[0]}, \
        f"{kit.what}: a chunk added back after its deletion is not found"


def check_save_then_load_gives_the_same_hits(kit: KitRetriever) -> None:
    retriever, chunks, vectors = _filled(kit)
    retriever.delete([chunks[1].id, chunks[2].id])
    with tempfile.TemporaryDirectory() as tmp:
        retriever.save(Path(tmp))
        files = [p for p in Path(tmp).rglob("*") if p.is_file()]
        assert files, f"{kit.what}: save wrote no files"
        for path in files:
            head = path.read_bytes()[:2]
            assert not (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5), \
                f"{kit.what}: {path.name} is a pickle; retrievers save their library's format, JSON or safetensors"
            if path.suffix == ".npy":
                np.load(path, allow_pickle=False)  # raises if the array needs pickle
        loaded = kit.load(Path(tmp))
    assert set(loaded.ids()) == set(retriever.ids()), f"{kit.what}: load gives other ids"
    before, after = (_query(r, chunks, vectors, QUERIES, 10) for r in (retriever, loaded))
    for row, (a, b) in enumerate(zip(before, after)):
        assert [h.id for h in a] == [h.id for h in b], f"{kit.what}: query {row} after load: {b} instead of {a}"
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5), \
            f"{kit.what}: query {row}: scores change through save/load"
    loaded.add([chunks[1]], vectors[[1]])
    assert chunks[1].id in {h.id for h in _query(loaded, chunks, vectors, [1], 10)[0]}, \
        f"{kit.what}: a chunk added after load is not found"


def check_adding_a_present_id_is_a_one_line_error(kit: KitRetriever) -> None:
    retriever, chunks, vectors = _filled(kit)
    clash = Chunk(chunks[7].id, "a different text")
    with pytest.raises(PlugformerError) as info:
        retriever.add([Chunk("brand-new", "new text"), clash], vectors[:2])
    assert chunks[7].id in _one_line(info.value, kit.what), f"{kit.what}: the error does not name the id"
    assert len(retriever) == CHUNKS and "brand-new" not in set(retriever.ids()), \
        f"{kit.what}: a refused add changed the index"
    twice = Chunk("twice", "text")
    with pytest.raises(PlugformerError) as info:
        retriever.add([twice, twice], vectors[:2])
    assert "twice" in _one_line(info.value, kit.what), f"{kit.what}: the error does not name the repeated id"


def check_an_empty_retriever_returns_no_hits(kit: KitRetriever) -> None:
    chunks, vectors = kit_corpus()
    retriever = kit.new()
    assert _query(retriever, chunks, vectors, [0, 1], 5) == [[], []], f"{kit.what}: an empty index returns hits"
    assert retriever.delete([chunks[0].id]) == 0, f"{kit.what}: deleting from an empty index counts ids"
    with tempfile.TemporaryDirectory() as tmp:
        retriever.save(Path(tmp))
        loaded = kit.load(Path(tmp))
    assert len(loaded) == 0 and _query(loaded, chunks, vectors, [0], 5) == [[]], \
        f"{kit.what}: an empty index is not empty after save/load"


def check_a_wrong_vector_shape_is_a_one_line_error(kit: KitRetriever) -> None:
    retriever = kit.new()
    if not retriever.uses_vectors:
        pytest.skip(f"{kit.what} does not read vectors")
    chunks, vectors = kit_corpus()
    wide = np.ones((3, DIM + 1), dtype=np.float32)
    with pytest.raises(PlugformerError) as info:
        retriever.add(chunks[:3], wide)
    _one_line(info.value, kit.what)
    assert len(retriever) == 0, f"{kit.what}: a refused add changed the index"
    retriever.add(chunks, vectors)
    for bad in (vectors[:1, :DIM - 1], vectors[:2], None):
        with pytest.raises(PlugformerError) as info:
            retriever.search([chunks[0].text], bad, 3)
        _one_line(info.value, kit.what)


CHECKS: tuple[Callable[[KitRetriever], None], ...] = (
    check_reads_vectors_or_text, check_hits_are_at_most_k_distinct_and_best_first,
    check_a_chunk_is_found_by_its_own_text_and_vector, check_exact_neighbours, check_incremental_adds_are_searchable,
    check_deleted_ids_are_never_returned, check_save_then_load_gives_the_same_hits,
    check_adding_a_present_id_is_a_one_line_error, check_an_empty_retriever_returns_no_hits,
    check_a_wrong_vector_shape_is_a_one_line_error)


@contract("retriever")
def test_reads_vectors_or_text(entry: Entry) -> None:
    check_reads_vectors_or_text(kit_retriever(entry))


@contract("retriever")
def test_hits_are_at_most_k_distinct_and_best_first(entry: Entry) -> None:
    check_hits_are_at_most_k_distinct_and_best_first(kit_retriever(entry))


@contract("retriever")
def test_a_chunk_is_found_by_its_own_text_and_vector(entry: Entry) -> None:
    check_a_chunk_is_found_by_its_own_text_and_vector(kit_retriever(entry))


@contract("retriever")
def test_an_exact_retriever_returns_the_true_nearest_neighbours(entry: Entry) -> None:
    check_exact_neighbours(kit_retriever(entry))


@contract("retriever")
def test_incremental_adds_are_searchable(entry: Entry) -> None:
    check_incremental_adds_are_searchable(kit_retriever(entry))


@contract("retriever")
def test_deleted_ids_are_never_returned(entry: Entry) -> None:
    check_deleted_ids_are_never_returned(kit_retriever(entry))


@contract("retriever")
def test_save_then_load_gives_the_same_hits(entry: Entry) -> None:
    check_save_then_load_gives_the_same_hits(kit_retriever(entry))


@contract("retriever")
def test_adding_a_present_id_is_a_one_line_error(entry: Entry) -> None:
    check_adding_a_present_id_is_a_one_line_error(kit_retriever(entry))


@contract("retriever")
def test_an_empty_retriever_returns_no_hits(entry: Entry) -> None:
    check_an_empty_retriever_returns_no_hits(kit_retriever(entry))


@contract("retriever")
def test_a_wrong_vector_shape_is_a_one_line_error(entry: Entry) -> None:
    check_a_wrong_vector_shape_is_a_one_line_error(kit_retriever(entry))
