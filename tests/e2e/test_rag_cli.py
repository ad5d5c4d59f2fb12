"""The retrieval commands as a user runs them: build an index of a small directory, query it, rebuild after an
edit (only the changed file is re-embedded), answer with ``plugformer rag``, evaluate retrieval, compare
retrievers in a sweep, and get one clear line for a damaged index or a different embedder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("faiss")
pytest.importorskip("bm25s")
pytest.importorskip("wordllama")


def write_kb(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "x200.md").write_text("The Orvan X200 drill weighs 2.4 kilograms and ships with two batteries.")
    (root / "tea.md").write_text("Green tea should be steeped at eighty degrees Celsius for two minutes.")
    (root / "rivers.jsonl").write_text(
        json.dumps({"id": "lune", "text": "The Lune river flows 90 kilometres to the Irish Sea."}) + "\n"
        + json.dumps({"id": "tamar", "text": "The Tamar river marks the border of Cornwall."}) + "\n")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from plugformer.testing.construct import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt", "model.max_seq_len=512")  # room for passages


def test_build_query_rebuild_and_answer(cli, tmp_path, checkpoint):
    kb = write_kb(tmp_path / "kb")
    built = cli("index", "build", f"data.path={kb}", "out=idx", "chunk.size=50", "chunk.overlap=10")
    assert "4 chunks from 4 documents (4 new" in built.stdout
    found = cli("index", "query", "index=idx", "query=how heavy is the X200 drill", "k=2", "json=true")
    hits = [json.loads(line) for line in found.stdout.splitlines()]
    assert hits[0]["id"] == "x200.md#0" and len(hits) == 2

    (kb / "tea.md").write_text("Black tea should be steeped at ninety-five degrees for four minutes.")
    again = cli("index", "build", f"data.path={kb}", "out=idx", "chunk.size=50", "chunk.overlap=10")
    assert "0 new, 1 changed, 3 unchanged" in again.stdout

    answer = cli("rag", "index=idx", f"checkpoint={checkpoint}", "question=Which river marks Cornwall's border?",
                 "k=2", "max_tokens=8", "seed=0")
    sources = answer.stdout.split("sources:")[1]
    assert "[1] tamar#0" in sources and sources.count("score") == 2

    # passages that do not fit the context with max_tokens are left out, and the user is told so
    crowded = cli("rag", "index=idx", f"checkpoint={checkpoint}", "question=Which river marks Cornwall's border?",
                  "k=2", "max_tokens=400", "seed=0")
    assert "2 of 2 retrieved passages did not fit the model's context of 512 tokens with max_tokens=400" in \
        crowded.stderr
    assert "sources: none (no passage fit the prompt)" in crowded.stdout


def test_lexical_index_evaluation_and_a_retriever_sweep(cli, tmp_path):
    kb = write_kb(tmp_path / "kb")
    (tmp_path / "q.jsonl").write_text(json.dumps({"query": "Lune river length", "relevant": ["lune"]}) + "\n"
                                      + json.dumps({"query": "tea temperature", "source": "tea.md"}) + "\n")
    cli("index", "build", f"data.path={kb}", "out=lex", "embedder=none", "retriever=bm25")
    scored = cli("eval", "retrieval", "index=lex", "queries=q.jsonl")
    assert "recall@1" in scored.stdout and "| 1.000 |" in scored.stdout
    sweep = cli("eval", "retrieval", "-m", f"data.path={kb}", "queries=q.jsonl", "retriever=bm25,faiss",
                "embedder=wordllama", "out=sweep.csv")
    rows = (tmp_path / "sweep.csv").read_text().splitlines()
    assert rows[0].startswith("config,recall@1") and len(rows) == 3
    assert "retriever=bm25" in sweep.stdout and "retriever=faiss" in sweep.stdout


def test_a_damaged_index_and_a_different_embedder_are_one_line(cli, tmp_path):
    kb = write_kb(tmp_path / "kb")
    cli("index", "build", f"data.path={kb}", "out=idx", "retriever=faiss")
    other = cli("index", "query", "index=idx", "query=tea", "embedder.dim=128", check=False)
    assert other.returncode == 2 and other.stderr.count("\n") == 1
    assert "built with embedder dim=256, but the query embedder has dim=128" in other.stderr
    (tmp_path / "idx" / "chunks.jsonl").write_text("{broken\n")
    damaged = cli("index", "query", "index=idx", "query=tea", check=False)
    assert damaged.returncode == 2 and "chunks.jsonl:1 is not a chunk" in damaged.stderr
    bad = cli("index", "build", "out=x", "retriever=faiss", "retriever.index=lsh", check=False)
    assert bad.returncode == 2 and "lsh" in bad.stderr and "Traceback" not in bad.stderr
