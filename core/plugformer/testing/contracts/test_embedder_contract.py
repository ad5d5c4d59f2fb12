"""Embedder contract, on the kit's sample texts (Latin, Cyrillic, CJK, emoji, code): vectors are float32
``(n, dim)`` with unit rows, deterministic, and distinct for distinct texts; a text's vector does not depend on
its batch (alone, among longer and shorter texts, in another order); ``embed_all`` equals ``embed`` over its
batches (with a progress bar too); no texts give a ``(0, dim)`` array; ``identity()`` is JSON-able, stable and
names the dimension; an unknown role is a one-line ConfigError; with capability ``roles`` a query and a passage
of the same text embed differently, without it alike."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from plugformer.errors import ConfigError
from plugformer.interfaces import Embedder
from plugformer.registry import Entry
from plugformer.testing.construct import build, label

contract = pytest.mark.plugformer_contract

TEXTS = ["How do I parse command-line flags?", "argparse parses command-line arguments into a namespace.",
         "Привет, мир", "数据结构与算法", "def add(a, b):\n    return a + b", "🙂 emoji and   odd\twhitespace",
         "x", "A much longer passage about the weather in the mountains, where it rains most afternoons in summer "
              "and snows from November to April."]
#: rows equal up to float32 rounding of a differently shaped (padded) computation
ATOL = 1e-5

_BUILT: dict[tuple[str, str, str], Embedder] = {}


def kit_embedder(entry: Entry) -> Embedder:
    """The entry built from its schema defaults (and the kit's values for required fields), once per entry:
    building can load a model. Tests must not change it, except ``batch_size`` restored after use."""
    key = (entry.family, entry.name, entry.provider)
    if key not in _BUILT:
        embedder = build(entry)
        assert isinstance(embedder, Embedder), f"{label(entry)}: builds a {type(embedder).__name__}, not an Embedder"
        _BUILT[key] = embedder
    return _BUILT[key]


def check_rows(vectors: Any, rows: int, embedder: Embedder, what: str) -> np.ndarray:
    assert isinstance(vectors, np.ndarray), f"{what}: returns {type(vectors).__name__}, not a numpy array"
    assert vectors.dtype == np.float32, f"{what}: dtype {vectors.dtype}, not float32"
    assert vectors.shape == (rows, embedder.dim), f"{what}: shape {vectors.shape}, not ({rows}, {embedder.dim})"
    assert np.isfinite(vectors).all(), f"{what}: non-finite values"
    norms = np.linalg.norm(vectors, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-4), f"{what}: row norms {norms.round(5).tolist()}, not 1"
    return vectors


@contract("embedder")
def test_vectors_are_unit_float32_rows_one_per_text(entry: Entry) -> None:
    embedder, what = kit_embedder(entry), label(entry)
    assert isinstance(embedder.dim, int) and embedder.dim > 0, f"{what}: dim is {embedder.dim!r}"
    for role in ("passage", "query"):
        vectors = check_rows(embedder.embed(TEXTS, role=role), len(TEXTS), embedder, f"{what} (role={role})")
        similarity = vectors @ vectors.T
        off_diagonal = similarity[~np.eye(len(TEXTS), dtype=bool)]
        assert (off_diagonal < 1 - 1e-6).all(), f"{what}: distinct texts get the same vector (role={role})"


@contract("embedder")
def test_embedding_is_deterministic(entry: Entry) -> None:
    embedder, what = kit_embedder(entry), label(entry)
    first = embedder.embed(TEXTS)
    np.testing.assert_array_equal(embedder.embed(TEXTS), first, err_msg=f"{what}: the same texts embed differently "
                                                                         "on a second call")


@contract("embedder")
def test_a_vector_does_not_depend_on_its_batch(entry: Entry) -> None:
    embedder, what = kit_embedder(entry), label(entry)
    together = embedder.embed(TEXTS)
    for i, text in enumerate(TEXTS):
        alone = embedder.embed([text])
        np.testing.assert_allclose(alone[0], together[i], atol=ATOL,
                                   err_msg=f"{what}: text {i} ({text[:30]!r}) alone differs from in a batch")
    order = list(reversed(range(len(TEXTS))))
    shuffled = embedder.embed([TEXTS[i] for i in order])
    np.testing.assert_allclose(shuffled, together[order], atol=ATOL,
                               err_msg=f"{what}: reordering the batch changes the vectors")


@contract("embedder")
def test_embed_all_equals_embed_over_its_batches(entry: Entry) -> None:
    embedder, what = kit_embedder(entry), label(entry)
    saved = embedder.batch_size
    embedder.batch_size = 3
    try:
        expected = np.concatenate([embedder.embed(TEXTS[i:i + 3], role="query") for i in range(0, len(TEXTS), 3)])
        for progress in (False, True):
            got = check_rows(embedder.embed_all(TEXTS, role="query", progress=progress), len(TEXTS), embedder,
                             f"{what}: embed_all(progress={progress})")
            np.testing.assert_allclose(got, expected, atol=ATOL,
                                       err_msg=f"{what}: embed_all(progress={progress}) differs from embed by batch")
    finally:
        embedder.batch_size = saved


@contract("embedder")
def test_no_texts_give_an_empty_array(entry: Entry) -> None:
    embedder, what = kit_embedder(entry), label(entry)
    check_rows(embedder.embed([]), 0, embedder, f"{what}: embed([])")
    check_rows(embedder.embed_all([], progress=True), 0, embedder, f"{what}: embed_all([])")


@contract("embedder")
def test_identity_is_json_stable_and_names_the_dimension(entry: Entry) -> None:
    embedder, what = kit_embedder(entry), label(entry)
    identity = embedder.identity()
    assert isinstance(identity, dict) and identity, f"{what}: identity() is {identity!r}, not a non-empty dict"
    assert json.loads(json.dumps(identity)) == identity, f"{what}: identity() does not survive JSON: {identity!r}"
    assert embedder.identity() == identity, f"{what}: identity() changes between calls"
    embedder.embed(TEXTS[:2])
    assert embedder.identity() == identity, f"{what}: identity() changes after embedding"
    assert identity.get("dim") == embedder.dim, f"{what}: identity() has dim={identity.get('dim')!r}, " \
                                                f"the vectors {embedder.dim}"


@contract("embedder")
def test_an_unknown_role_is_a_one_line_config_error(entry: Entry) -> None:
    embedder, what = kit_embedder(entry), label(entry)
    for call in (embedder.embed, embedder.embed_all):
        with pytest.raises(ConfigError) as info:
            call(TEXTS[:1], role="document")
        assert "\n" not in str(info.value) and "document" in str(info.value), \
            f"{what}: {call.__name__} with role='document' says {info.value!r}"


@contract("embedder")
def test_roles_embed_differently_exactly_when_declared(entry: Entry) -> None:
    embedder, what = kit_embedder(entry), label(entry)
    queries, passages = embedder.embed(TEXTS, role="query"), embedder.embed(TEXTS, role="passage")
    same = np.isclose(queries, passages, atol=ATOL).all(axis=1)
    if entry.capabilities.get("roles"):
        assert not same.any(), f"{what}: declares roles, but texts {np.flatnonzero(same).tolist()} embed alike " \
                               "as query and passage"
    else:
        assert same.all(), f"{what}: does not declare roles, but texts {np.flatnonzero(~same).tolist()} embed " \
                           "differently as query and passage"
