"""The index directory: build from documents, search, re-sync only what changed, survive crashes, refuse a
different embedder and damaged files in one line. Uses two toy components registered here (a hashing
bag-of-words embedder and an exact numpy retriever), so the core is tested without any plugin."""
import json
from pathlib import Path

import pytest

from plugformer.errors import ConfigError, PlugformerError
from plugformer.retrieval.chunking import Chunker, Document, read_documents
from plugformer.retrieval.index import CHUNKS_FILE, MANIFEST_FILE, Index
from plugformer.retrieval.knowledge import pydoc_topics
from plugformer.testing.retrieval_toys import ExactRetriever, toy_registries


@pytest.fixture()
def registries():
    return toy_registries()


def kb(tmp_path: Path) -> Path:
    root = tmp_path / "kb"
    (root / "sub").mkdir(parents=True)
    (root / "x200.md").write_text("The X200 drill weighs 2.4 kg and is made by Orvan.")
    (root / "sub" / "tea.txt").write_text("Green tea is steeped at eighty degrees for two minutes.")
    (root / "facts.jsonl").write_text(json.dumps({"id": "river", "text": "The Lune river is 90 km long.",
                                                  "title": "Lune"}) + "\n")
    (root / "notes.bin").write_bytes(b"\x00\x01")
    return root


def test_build_search_and_reopen(registries, tmp_path):
    index = Index.create(registries, retriever="exact", embedder={"name": "hash", "dim": 64})
    report = index.sync(read_documents(kb(tmp_path)), Chunker(size=50, overlap=10))
    assert (len(report.added), report.chunks_added) == (3, 3)
    index.save(tmp_path / "idx")
    reopened = Index.open(tmp_path / "idx", registries)
    best = reopened.search(["how much does the X200 weigh"], k=2)[0]
    assert best[0].chunk.id == "x200.md#0" and best[0].chunk.metadata["source"] == "x200.md"
    river = reopened.search(["Lune river length"], k=1)[0][0].chunk
    assert river.id == "river#0" and river.metadata["title"] == "Lune"


def test_rebuilding_adds_only_new_or_changed_files(registries, tmp_path):
    root = kb(tmp_path)
    index = Index.create(registries, retriever="exact", embedder="hash")
    index.sync(read_documents(root), Chunker(size=50, overlap=10))
    index.save(tmp_path / "idx")
    (root / "x200.md").write_text("The X200 drill now weighs 2.1 kg.")
    (root / "new.md").write_text("Basalt is an igneous rock.")
    again = Index.open(tmp_path / "idx", registries)
    report = again.sync(read_documents(root), Chunker(size=50, overlap=10))
    assert (report.added, report.changed, report.unchanged) == (["new.md"], ["x200.md"], 2)
    assert len(again) == 4 and "2.1 kg" in again.chunks["x200.md#0"].text
    (root / "sub" / "tea.txt").unlink()
    pruned = again.sync(read_documents(root), Chunker(size=50, overlap=10), prune=True)
    assert pruned.removed == ["sub/tea.txt"] and "sub/tea.txt#0" not in again.chunks


def test_long_documents_are_split_into_overlapping_chunks_that_slice_the_text():
    text = " ".join(f"w{i}" for i in range(25))
    chunks = Chunker(size=10, overlap=3).chunks(Document("d", text))
    assert [c.id for c in chunks] == ["d#0", "d#1", "d#2", "d#3"]  # windows start at words 0, 7, 14, 21
    assert chunks[0].text.split()[-3:] == chunks[1].text.split()[:3]
    assert chunks[-1].text.split()[-1] == "w24" and all(c.text in text for c in chunks)
    with pytest.raises(ConfigError, match=r"chunk.overlap must be a whole number in \[0, chunk.size=10\), got 10"):
        Chunker(size=10, overlap=10)


def test_the_embedded_knowledge_base_is_pythons_own_documentation():
    docs = list(pydoc_topics())
    assert len(docs) > 50 and any(d.source == "pydoc:with" for d in docs)


def test_a_different_query_embedder_is_refused_in_one_line(registries, tmp_path):
    index = Index.create(registries, retriever="exact", embedder="hash")
    index.sync(read_documents(kb(tmp_path)), Chunker())
    index.save(tmp_path / "idx")
    with pytest.raises(ConfigError, match=r"built with embedder salt='', but the query embedder has salt='x'"):
        Index.open(tmp_path / "idx", registries, embedder={"name": "hash", "salt": "x"})


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / MANIFEST_FILE).write_text("{not json"), "index.json is unreadable"),
    (lambda d: (d / CHUNKS_FILE).write_text("garbage\n"), "chunks.jsonl:1 is not a chunk"),
    (lambda d: (d / "retriever" / "exact.json").unlink(), "retriever/: FileNotFoundError"),
    (lambda d: (d / MANIFEST_FILE).unlink(), "is not an index"),
])
def test_a_damaged_index_is_one_line_naming_the_file(registries, tmp_path, damage, message):
    index = Index.create(registries, retriever="exact", embedder="hash")
    index.sync(read_documents(kb(tmp_path)), Chunker())
    index.save(tmp_path / "idx")
    damage(tmp_path / "idx")
    with pytest.raises(PlugformerError, match=message) as info:
        Index.open(tmp_path / "idx", registries)
    assert "\n" not in str(info.value)


def test_a_crash_while_saving_keeps_the_last_good_index(registries, tmp_path, monkeypatch):
    index = Index.create(registries, retriever="exact", embedder="hash")
    index.sync(read_documents(kb(tmp_path)), Chunker())
    index.save(tmp_path / "idx")
    index.add([Document("extra", "one more").digest and Chunker().chunks(Document("extra", "one more"))[0]])

    def crash(self, directory):
        raise OSError("disk full")

    monkeypatch.setattr(ExactRetriever, "save", crash)
    with pytest.raises(OSError):
        index.save(tmp_path / "idx")
    assert len(Index.open(tmp_path / "idx", registries)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "kb"]


def test_a_crash_between_the_swaps_is_recovered_on_open(registries, tmp_path):
    index = Index.create(registries, retriever="exact", embedder="hash")
    index.sync(read_documents(kb(tmp_path)), Chunker())
    index.save(tmp_path / "idx")
    (tmp_path / "idx").rename(tmp_path / ".old-idx")  # the state right after the first rename
    assert len(Index.open(tmp_path / "idx", registries)) == 3


def test_bad_documents_and_search_arguments_are_one_line(registries, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"title": "no text"}\n')
    with pytest.raises(PlugformerError, match=r"bad.jsonl:2: a document line needs a string field text"):
        list(read_documents(bad))
    with pytest.raises(PlugformerError, match="does not exist"):
        list(read_documents(tmp_path / "missing"))
    index = Index.create(registries, retriever="exact", embedder="hash")
    with pytest.raises(ConfigError, match="k must be a positive integer, got 0"):
        index.search(["q"], k=0)
    with pytest.raises(ConfigError, match="search option 'nprobe' is not one of ExactRetriever's: none"):
        index.search(["q"], k=1, nprobe=3)
    with pytest.raises(ConfigError, match="searches vectors: it needs an embedder"):
        Index.create(registries, retriever="exact")


def test_secrets_in_a_config_node_never_reach_the_manifest(registries, tmp_path):
    index = Index.create(registries, retriever="exact", embedder={"name": "hash", "salt": "s"})
    index.retriever_node = {"name": "exact", "api_key": "hunter2", "nested": {"password": "x", "keep": 1}}
    index.save(tmp_path / "idx")
    text = (tmp_path / "idx" / MANIFEST_FILE).read_text()
    assert "hunter2" not in text and '"keep": 1' in text and "password" not in text
