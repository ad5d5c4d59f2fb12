"""The ``qdrant`` retriever: a user indexes chunks in a Qdrant collection (in process, as tested here; a Qdrant
server at ``url`` is the same code with HNSW), finds the nearest ones, adds and deletes as documents change, and
gets the same answers back after saving the index and restarting. Vectors are seeded, clustered, unit length."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from plugformer.errors import ConfigError, PlugformerError
from plugformer.interfaces.retrieval import Chunk, check_search_options
from plugformer.retrieval import build_retriever, load_retriever

pytest.importorskip("qdrant_client", reason="qdrant-client is not installed (pip install 'plugformer[vectordb]')")

DIM = 16


@pytest.fixture(scope="module")
def registries(builtin_host):
    return builtin_host.registries


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def corpus(n: int, seed: int = 0, prefix: str = "doc") -> tuple[list[Chunk], np.ndarray]:
    """``n`` chunks around 8 cluster centres, so neighbours are meaningful and near-ties are rare."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, DIM))
    vectors = unit(centres[rng.integers(0, 8, n)] + 0.4 * rng.standard_normal((n, DIM)))
    return [Chunk(f"{prefix}/{i}.md#0", f"text {i}", {"source": f"{prefix}/{i}.md"}) for i in range(n)], vectors


def queries(n: int, seed: int = 1) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((n, DIM)))


def true_neighbours(chunks: list[Chunk], vectors: np.ndarray, query_vectors: np.ndarray, k: int) -> list[list[str]]:
    order = np.argsort(-(query_vectors @ vectors.T), axis=1, kind="stable")[:, :k]
    return [[chunks[j].id for j in row] for row in order]


def search_ids(retriever, query_vectors: np.ndarray, k: int, **options) -> list[list[str]]:
    texts = ["q"] * len(query_vectors)
    return [[hit.id for hit in hits] for hits in retriever.search(texts, query_vectors, k, **options)]


def test_the_nearest_chunks_come_back_best_first(registries):
    chunks, vectors = corpus(60)
    retriever = build_retriever(registries, "qdrant", DIM)
    retriever.add(chunks, vectors)
    q = queries(5)
    results = retriever.search(["q"] * 5, q, 4)
    assert [[h.id for h in hits] for hits in results] == true_neighbours(chunks, vectors, q, 4)
    for hits, row in zip(results, q):
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        expected = np.sort(vectors @ row)[::-1][:4]
        np.testing.assert_allclose(scores, expected, atol=1e-5)  # cosine of unit vectors = inner product
    assert len(retriever) == 60 and sorted(retriever.ids()) == sorted(c.id for c in chunks)
    # asking for more than there is returns everything, still best first and without duplicates
    everything = search_ids(retriever, q[:1], 100)[0]
    assert len(everything) == 60 == len(set(everything))
    assert retriever.search([], np.zeros((0, DIM), np.float32), 3) == []


def test_documents_change_adds_and_deletes_are_incremental(registries):
    chunks, vectors = corpus(40)
    retriever = build_retriever(registries, "qdrant", DIM)
    retriever.add(chunks[:25], vectors[:25])
    retriever.add(chunks[25:], vectors[25:])  # a second batch of documents joins the first
    q = queries(3)
    assert search_ids(retriever, q, 5) == true_neighbours(chunks, vectors, q, 5)

    gone = {hit for row in search_ids(retriever, q, 2) for hit in row}
    assert retriever.delete([*gone, "never/indexed.md#0", next(iter(gone))]) == len(gone)
    assert retriever.delete(list(gone)) == 0
    keep = [i for i, c in enumerate(chunks) if c.id not in gone]
    left = [chunks[i] for i in keep]
    after = search_ids(retriever, q, 5)
    assert after == true_neighbours(left, vectors[keep], q, 5)
    assert not gone & {hit for row in after for hit in row}
    assert len(retriever) == 40 - len(gone)

    # a changed file is re-indexed by deleting its chunks and adding them again
    changed = chunks[keep[0]]
    retriever.delete([changed.id])
    retriever.add([changed], q[:1])
    assert search_ids(retriever, q[:1], 1) == [[changed.id]]


def test_adding_an_id_that_is_already_indexed_names_it(registries):
    chunks, vectors = corpus(6)
    retriever = build_retriever(registries, "qdrant", DIM)
    retriever.add(chunks, vectors)
    with pytest.raises(PlugformerError, match=r"already indexed: 'doc/2\.md#0' \(delete them first\)"):
        retriever.add([chunks[2]], vectors[2:3])
    with pytest.raises(PlugformerError, match=r"'new#0' appears twice"):
        retriever.add([Chunk("new#0", "a"), Chunk("new#0", "b")], vectors[:2])
    assert len(retriever) == 6  # nothing half-added


@pytest.mark.parametrize("bad, message", [
    (np.zeros((3, DIM + 1), np.float32), r"expected shape \(3, 16\), got \(3, 17\)"),
    (np.zeros((2, DIM), np.float32), r"expected shape \(3, 16\), got \(2, 16\)"),
    (np.full((3, DIM), np.nan, np.float32), "NaN"),
    (None, "got None"),
])
def test_vectors_of_the_wrong_shape_are_one_line(registries, bad, message):
    retriever = build_retriever(registries, "qdrant", DIM)
    chunks, _ = corpus(3)
    with pytest.raises(PlugformerError, match=message) as error:
        retriever.add(chunks, bad)
    assert "\n" not in str(error.value)
    with pytest.raises(PlugformerError, match="query vectors"):
        retriever.search(["q"], np.zeros((1, DIM - 1), np.float32), 3)


def test_search_options_and_config_mistakes_are_one_line(registries):
    retriever = build_retriever(registries, "qdrant", DIM)
    chunks, vectors = corpus(10)
    retriever.add(chunks, vectors)
    q = queries(2)
    # in process every search is exact; the server's knobs are accepted so one config serves both
    assert search_ids(retriever, q, 3, ef_search=8, exact=False) == true_neighbours(chunks, vectors, q, 3)
    with pytest.raises(ConfigError, match="'nprobe' is not one of QdrantRetriever's: ef_search, exact"):
        check_search_options(retriever, {"nprobe": 4})
    with pytest.raises(ConfigError, match="ef_search must be a positive integer, got 0"):
        retriever.search(["q"], q[:1], 3, ef_search=0)
    with pytest.raises(ConfigError, match="k must be a positive integer, got 0"):
        retriever.search(["q"], q[:1], 0)
    with pytest.raises(ConfigError, match="location='disk' is not one of memory, local, url"):
        build_retriever(registries, {"name": "qdrant", "location": "disk"}, DIM)
    with pytest.raises(ConfigError, match="location=local needs retriever.path"):
        build_retriever(registries, {"name": "qdrant", "location": "local"}, DIM)
    with pytest.raises(ConfigError, match="location=url needs retriever.url"):
        build_retriever(registries, {"name": "qdrant", "location": "url"}, DIM)
    with pytest.raises(ConfigError, match=r"retriever.url='ftp://x:1' is not a Qdrant server address \(http"):
        build_retriever(registries, {"name": "qdrant", "location": "url", "url": "ftp://x:1"}, DIM)
    with pytest.raises(ConfigError, match="collection='a b'"):
        build_retriever(registries, {"name": "qdrant", "collection": "a b"}, DIM)
    with pytest.raises(ConfigError, match="needs an embedder"):
        build_retriever(registries, "qdrant", None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_is_not_there_is_one_line(registries):
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(PlugformerError, match=rf"qdrant \({url}, collection 'kb'\): opening the collection failed") \
            as error:
        build_retriever(registries, {"name": "qdrant", "location": "url", "url": url, "collection": "kb",
                                     "timeout": 5}, DIM)
    assert "\n" not in str(error.value)


@pytest.mark.slow  # a second Python process
def test_saved_index_is_json_and_safetensors_and_loads_after_a_restart(registries, tmp_path):
    chunks, vectors = corpus(50)
    retriever = build_retriever(registries, {"name": "qdrant", "collection": "kb"}, DIM)
    retriever.add(chunks, vectors)
    retriever.delete([chunks[0].id])
    saved = tmp_path / "retriever"
    saved.mkdir()
    retriever.save(saved)
    assert sorted(p.name for p in saved.iterdir()) == ["ids.json", "qdrant.json", "vectors.safetensors"]
    manifest = json.loads((saved / "qdrant.json").read_text())
    assert manifest["count"] == 49 and manifest["dim"] == DIM and manifest["location"] == "in-process"
    q = queries(6)
    before = retriever.search(["q"] * 6, q, 5)

    # a new process (nothing shared but the directory) answers the same
    script = (
        "import json, sys, numpy as np\n"
        "from plugformer.plugins import load_plugins\n"
        "from plugformer.retrieval import load_retriever\n"
        "q = np.asarray(json.loads(sys.stdin.read()), dtype=np.float32)\n"
        "r = load_retriever(load_plugins().registries, {'name': 'qdrant', 'collection': 'kb'}, 16, sys.argv[1])\n"
        "print(json.dumps([[[h.id, h.score] for h in hits] for hits in r.search(['q'] * len(q), q, 5)]))\n")
    done = subprocess.run([sys.executable, "-c", script, str(saved)], input=json.dumps(q.tolist()),
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    after = json.loads(done.stdout.splitlines()[-1])
    assert [[i for i, _ in hits] for hits in after] == [[h.id for h in hits] for hits in before]
    np.testing.assert_allclose([[s for _, s in hits] for hits in after], [[h.score for h in hits] for hits in before],
                               atol=1e-6)

    # in this process too, and the loaded index keeps taking adds and deletes
    loaded = load_retriever(registries, {"name": "qdrant", "collection": "kb"}, DIM, saved)
    assert len(loaded) == 49 and chunks[0].id not in set(loaded.ids())
    loaded.add(chunks[:1], vectors[:1])
    assert search_ids(loaded, vectors[:1], 1) == [[chunks[0].id]]


def test_local_mode_keeps_its_working_store_under_path_and_saves_into_the_index(registries, tmp_path):
    work = tmp_path / "qdrant-work"
    node = {"name": "qdrant", "location": "local", "path": str(work)}
    chunks, vectors = corpus(12)
    retriever = build_retriever(registries, node, DIM)
    retriever.add(chunks, vectors)
    stores = list(work.iterdir())
    assert len(stores) == 1 and (stores[0] / "meta.json").exists()  # qdrant's own on-disk local store
    q = queries(3)
    before = search_ids(retriever, q, 4)
    assert before == true_neighbours(chunks, vectors, q, 4)
    saved = tmp_path / "retriever"
    saved.mkdir()
    retriever.save(saved)
    retriever.close()
    assert list(work.iterdir()) == []  # the working store goes with the retriever; the index keeps the points
    assert not any(p.suffix in (".sqlite", ".pkl") for p in saved.rglob("*"))

    loaded = load_retriever(registries, node, DIM, saved)
    assert search_ids(loaded, q, 4) == before
    in_memory = load_retriever(registries, "qdrant", DIM, saved)  # same points, held in RAM instead
    assert search_ids(in_memory, q, 4) == before
    loaded.close()


def test_a_damaged_or_mismatched_saved_index_is_one_line(registries, tmp_path):
    chunks, vectors = corpus(5)
    retriever = build_retriever(registries, "qdrant", DIM)
    retriever.add(chunks, vectors)
    saved = tmp_path / "retriever"
    saved.mkdir()
    retriever.save(saved)

    with pytest.raises(PlugformerError, match="dimension 16, but the index's embedder has 8"):
        load_retriever(registries, "qdrant", 8, saved)
    with pytest.raises(PlugformerError, match="load it with retriever.location=memory or local, not url"):
        load_retriever(registries, {"name": "qdrant", "location": "url", "url": "http://127.0.0.1:1"}, DIM, saved)

    (saved / "vectors.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PlugformerError, match=r"vectors\.safetensors: unreadable") as error:
        load_retriever(registries, "qdrant", DIM, saved)
    assert "\n" not in str(error.value)
    (saved / "ids.json").write_text('["a", "a"]')
    with pytest.raises(PlugformerError, match=r"ids\.json: expected a list of distinct"):
        load_retriever(registries, "qdrant", DIM, saved)
    (saved / "qdrant.json").unlink()
    with pytest.raises(PlugformerError, match=r"qdrant\.json: missing"):
        load_retriever(registries, "qdrant", DIM, saved)


def test_a_server_index_records_the_connection_but_never_the_key(registries, tmp_path, monkeypatch):
    """The server path, as far as it goes without a server: load reads the url and collection from the saved
    record and asks the server for them (here: nobody answers, one line)."""
    saved = tmp_path / "retriever"
    saved.mkdir()
    url = f"http://127.0.0.1:{_free_port()}"
    (saved / "qdrant.json").write_text(json.dumps({"format": "plugformer-qdrant", "version": 1, "location": "url",
                                                   "url": url, "collection": "kb", "dim": DIM, "count": 3}))
    monkeypatch.setenv("QDRANT_API_KEY", "secret")
    with pytest.raises(PlugformerError, match=rf"qdrant \({url}, collection 'kb'\)"):
        load_retriever(registries, {"name": "qdrant", "location": "url", "timeout": 5}, DIM, saved)
    with pytest.raises(PlugformerError, match=f"the points are on the Qdrant server {url}; load it with "
                                              "retriever.location=url, not memory"):
        load_retriever(registries, "qdrant", DIM, saved)


def test_qdrant_is_registered_as_a_persistent_retriever(registries):
    entry = registries.retriever.get("qdrant")
    assert entry.capabilities == {"persistent": True}  # approximate on a server (HNSW): no `exact` claim
    assert entry.availability() == (True, "")
    assert entry.provider == "plugformer" and entry.plugin == "vectordb"
