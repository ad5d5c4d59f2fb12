"""Retrievers, as a user meets them: faiss indexes that train, trade recall for speed and forget deleted chunks;
BM25 that finds the passage naming the identifier a question asks about; hybrid fusion that gets right what
either part alone gets wrong; and saved indexes that, once damaged, say which file in one line.

Every retriever is built the way the core builds it (``plugformer.retrieval.build_retriever``); the non-default
faiss index types are also held to the conformance kit's retriever contract here (the kit runs only defaults).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install 'plugformer[retrieval]')")
pytest.importorskip("bm25s", reason="bm25s is not installed (pip install 'plugformer[retrieval]')")

from plugformer import ConfigError, PlugformerError
from plugformer.interfaces.retrieval import Chunk, Retriever
from plugformer.plugins import load_plugins
from plugformer.retrieval import build_retriever, load_retriever
from plugformer.testing.contracts import test_retriever_contract as kit
from plugformer_retrieval.lexical_tokens import words


@pytest.fixture(scope="module")
def registries() -> Any:
    return load_plugins().registries


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors around ``clusters`` centres: the structure real embeddings have, which IVF exploits."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return unit(centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)))


def chunks_for(n: int, prefix: str = "c") -> list[Chunk]:
    return [Chunk(f"{prefix}{i}", f"chunk {i}") for i in range(n)]


def recall_at_10(retriever: Retriever, queries: np.ndarray, truth: np.ndarray, **options: Any) -> float:
    hits = retriever.search([""] * len(queries), queries, 10, **options)
    return float(np.mean([len({h.id for h in row} & {f"c{i}" for i in best}) / 10
                          for row, best in zip(hits, truth)]))


# -- the non-default faiss indexes keep the whole retriever contract ------------------------------------------

FAISS_VARIANTS = {
    "ivf": {"index": "ivf", "nlist": 8, "nprobe": 8},
    "hnsw": {"index": "hnsw"},
    "ivfpq": {"index": "ivfpq", "nlist": 4, "nprobe": 4, "m": 8, "nbits": 6},
}


@pytest.mark.parametrize("check", kit.CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
@pytest.mark.parametrize("variant", sorted(FAISS_VARIANTS))
def test_every_faiss_index_type_keeps_the_retriever_contract(registries: Any, variant: str, check: Any) -> None:
    retriever = kit.kit_retriever(registries.retriever.get("faiss"), **FAISS_VARIANTS[variant])
    check(retriever)  # check_exact_neighbours skips: these indexes are approximate


def test_only_a_flat_faiss_index_claims_to_be_exact(registries: Any) -> None:
    assert build_retriever(registries, {"name": "faiss", "index": "flat"}, 8).exact
    for variant in FAISS_VARIANTS.values():
        assert not build_retriever(registries, {"name": "faiss", **variant}, 32).exact
    assert "exact" not in registries.retriever.get("faiss").capabilities


# -- faiss: training, recall against speed, deletion -----------------------------------------------------------

def test_an_ivf_index_trains_on_its_first_add_and_refuses_one_too_small(registries: Any) -> None:
    retriever = build_retriever(registries, {"name": "faiss", "index": "ivf", "nlist": 16}, 16)
    vectors = clustered(200, 16, 8)
    with pytest.raises(PlugformerError, match=r"at least 16 vectors; got 10") as info:
        retriever.add(chunks_for(10), vectors[:10])
    assert "\n" not in str(info.value) and len(retriever) == 0
    retriever.add(chunks_for(200), vectors)
    assert retriever.search([""], vectors[:1], 1)[0][0].id == "c0"
    retriever.add([Chunk("late", "added after training")], vectors[5:6])  # later adds need no training
    assert "late" in {h.id for h in retriever.search([""], vectors[5:6], 2)[0]}


def test_an_ivfpq_index_needs_enough_vectors_for_its_codebooks(registries: Any) -> None:
    retriever = build_retriever(registries, {"name": "faiss", "index": "ivfpq", "nlist": 4, "m": 4, "nbits": 8}, 16)
    with pytest.raises(PlugformerError, match="at least 256 vectors; got 100"):
        retriever.add(chunks_for(100), clustered(100, 16, 4))
    with pytest.raises(ConfigError, match=r"retriever.m=5 must divide the vectors' dimension 16 .*choices: 1, 2, 4"):
        build_retriever(registries, {"name": "faiss", "index": "ivfpq", "m": 5}, 16)


def test_more_ivf_probes_find_more_of_the_true_neighbours(registries: Any) -> None:
    vectors = clustered(3000, 32, 64, seed=1)
    queries = clustered(40, 32, 64, seed=2)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    ivf = build_retriever(registries, {"name": "faiss", "index": "ivf", "nlist": 64, "nprobe": 1}, 32)
    ivf.add(chunks_for(3000), vectors)
    one, eight, every = (recall_at_10(ivf, queries, truth, nprobe=n) for n in (1, 8, 64))
    assert one < eight <= every == 1.0, (one, eight, every)
    assert recall_at_10(ivf, queries, truth) == one  # without the option: the config's nprobe=1
    with pytest.raises(ConfigError, match="search option 'ef_search' is not one of FaissRetriever's: nprobe"):
        ivf.search([""], queries[:1], 10, ef_search=10)
    with pytest.raises(ConfigError, match="nprobe must be a positive integer, got 0"):
        ivf.search([""], queries[:1], 10, nprobe=0)


def test_an_hnsw_index_never_returns_a_deleted_chunk_and_compacts_its_graph(registries: Any, tmp_path: Path) -> None:
    vectors = clustered(300, 16, 10)
    hnsw = build_retriever(registries, {"name": "faiss", "index": "hnsw"}, 16)
    hnsw.add(chunks_for(300), vectors)
    gone = [f"c{i}" for i in range(0, 300, 3)]  # a third: kept in the graph as tombstones
    assert hnsw.delete(gone) == 100 and hnsw.tombstones == 100
    for row in hnsw.search([""] * 300, vectors, 10):
        assert len(row) == 10 and not {h.id for h in row} & set(gone)  # still k live hits per query
    hnsw.save(tmp_path)
    loaded = load_retriever(registries, {"name": "faiss", "index": "hnsw"}, 16, tmp_path)
    assert loaded.tombstones == 100 and not {h.id for row in loaded.search([""] * 300, vectors, 10) for h in row} \
        & set(gone)
    more = [f"c{i}" for i in range(1, 300, 3)]  # now the deleted outnumber the live: the graph is rebuilt
    assert hnsw.delete(more) == 100 and hnsw.tombstones == 0 and len(hnsw) == 100
    live = {f"c{i}" for i in range(2, 300, 3)}
    hits = hnsw.search([""] * 300, vectors, 10)
    assert all({h.id for h in row} <= live and len(row) == 10 for row in hits)
    assert all(row[0].id == f"c{i}" for i, row in enumerate(hits) if f"c{i}" in live)


def test_a_faiss_index_needs_vectors_and_a_known_index_type(registries: Any) -> None:
    with pytest.raises(ConfigError, match="retriever 'faiss' searches vectors: it needs an embedder"):
        build_retriever(registries, "faiss", None)
    with pytest.raises(ConfigError, match="index='annoy' is not one of: flat, ivf, hnsw, ivfpq"):
        build_retriever(registries, {"name": "faiss", "index": "annoy"}, 8)
    with pytest.raises(ConfigError, match="nlist"):
        build_retriever(registries, {"name": "faiss", "index": "ivf", "nlist": 0}, 8)


# -- bm25: words, identifiers, no embedder ---------------------------------------------------------------------

DOCS = {
    "argparse": "The argparse module: create an ArgumentParser, add_argument for each flag, then parse_args() "
                "reads the command-line options.",
    "json": "json.loads parses a JSON document into Python objects; json.dumps writes them back as text.",
    "pathlib": "pathlib.Path objects join paths with the / operator and read files with read_text().",
    "logging": "The logging module: getLogger returns a named logger; basicConfig sets the level and format.",
    "re": "re.compile builds a regular expression object; match, search and findall apply it to text.",
}


def test_bm25_finds_the_passage_a_question_names(registries: Any) -> None:
    bm25 = build_retriever(registries, "bm25", None)  # a lexical index needs no embedder
    assert bm25.uses_text and not bm25.uses_vectors
    bm25.add([Chunk(k, v) for k, v in DOCS.items()], None)
    questions = {"how do I parse command line flags": "argparse", "what does ArgumentParser do": "argparse",
                 "json loads": "json", "read a file from a path": "pathlib", "getLogger": "logging",
                 "get logger": "logging", "compile a regular expression": "re"}
    for question, expected in questions.items():
        assert bm25.search([question], None, 1)[0][0].id == expected, question
    assert bm25.search(["quantum chromodynamics"], None, 3) == [[]]  # no shared word: no hit


def test_bm25_words_split_identifiers_and_can_drop_stop_words(registries: Any) -> None:
    assert words("ArgumentParser.parse_args()") == ["argumentparser", "argument", "parser", "parse_args", "parse",
                                                    "args"]
    assert words("HTTPServer") == ["httpserver", "http", "server"]
    assert words("parse_args", split_identifiers=False) == ["parse_args"]
    plain = build_retriever(registries, {"name": "bm25", "split_identifiers": False}, None)
    plain.add([Chunk(k, v) for k, v in DOCS.items()], None)
    assert plain.search(["parse args"], None, 1) == [[]]  # only the whole identifier parse_args is a word
    english = build_retriever(registries, {"name": "bm25", "stopwords": "en"}, None)
    english.add([Chunk(k, v) for k, v in DOCS.items()], None)
    assert english.search(["the and of"], None, 5) == [[]]
    with pytest.raises(ConfigError, match="method='okapi' is not one of: lucene, robertson, atire, bm25l, bm25\\+"):
        build_retriever(registries, {"name": "bm25", "method": "okapi"}, None)


def test_bm25_scores_follow_the_corpus_as_it_changes(registries: Any, tmp_path: Path) -> None:
    bm25 = build_retriever(registries, "bm25", None)
    bm25.add([Chunk(k, v) for k, v in DOCS.items()], None)
    before = bm25.search(["module"], None, 5)[0]
    assert {h.id for h in before} == {"argparse", "logging"}
    bm25.delete(["logging"])
    bm25.add([Chunk("importlib", "importlib.import_module imports a module by name.")], None)
    after = bm25.search(["module"], None, 5)[0]
    assert {h.id for h in after} == {"argparse", "importlib"}
    bm25.save(tmp_path)
    tuned = load_retriever(registries, {"name": "bm25", "k1": 0.5}, None, tmp_path)  # other parameters: re-indexed
    assert [h.id for h in tuned.search(["module"], None, 5)[0]] == [h.id for h in after]
    assert tuned.search(["module"], None, 1)[0][0].score != after[0].score


# -- hybrid: fusion wins where the parts disagree --------------------------------------------------------------

def disagreeing_toy() -> tuple[list[Chunk], np.ndarray, list[str], np.ndarray, list[str]]:
    """30 chunks with orthonormal vectors and one rare word each, and 20 questions with their answers:
    10 name the answer's rare word but have a vector nearer another chunk (dense gets them wrong), 10 are
    paraphrases sharing no word with any chunk but with the answer's vector (lexical finds nothing)."""
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((32, 32)))[0][:30].astype(np.float32)
    chunks = [Chunk(f"c{i}", f"{kit.unique_word(i)} passage") for i in range(30)]
    texts, vectors, answers = [], [], []
    for i in range(10):
        texts.append(f"where is {kit.unique_word(i)}")
        vectors.append(basis[i] + 1.2 * basis[i + 10])
        answers.append(f"c{i}")
    for i in range(10, 20):
        texts.append("something phrased differently")
        vectors.append(basis[i])
        answers.append(f"c{i}")
    return chunks, basis, texts, unit(np.stack(vectors)), answers


def test_hybrid_gets_right_what_either_part_gets_wrong(registries: Any) -> None:
    chunks, basis, texts, queries, answers = disagreeing_toy()

    def top1(node: Any) -> float:
        retriever = build_retriever(registries, node, 32)
        retriever.add(chunks, basis)
        hits = retriever.search(texts, queries, 5)
        return float(np.mean([bool(row) and row[0].id == answer for row, answer in zip(hits, answers)]))

    lexical, dense, fused = top1("bm25"), top1({"name": "faiss"}), top1("hybrid")
    assert lexical == dense == 0.5  # the toy works: each part gets exactly the other's half wrong
    assert fused == 1.0 >= max(lexical, dense)


def test_hybrid_passes_search_options_to_the_part_that_takes_them(registries: Any, tmp_path: Path) -> None:
    node = {"name": "hybrid", "second": {"name": "faiss", "index": "ivf", "nlist": 4, "nprobe": 1}}
    hybrid = build_retriever(registries, node, 16)
    assert hybrid.search_options == ("nprobe",) and hybrid.uses_text and hybrid.uses_vectors
    vectors = clustered(100, 16, 4)
    hybrid.add(chunks_for(100), vectors)
    assert hybrid.search(["chunk 7"], vectors[7:8], 3, nprobe=4)[0][0].id == "c7"
    with pytest.raises(ConfigError, match="'ef_search' is not one of HybridRetriever's: nprobe"):
        hybrid.search(["chunk 7"], vectors[7:8], 3, ef_search=4)
    hybrid.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second"]
    lexical_only = build_retriever(registries, {"name": "hybrid", "second": {"name": "bm25", "k1": 0.9}}, None)
    assert not lexical_only.uses_vectors  # two lexical parts: no embedder needed
    with pytest.raises(ConfigError, match="weights must have two numbers"):
        build_retriever(registries, {"name": "hybrid", "weights": [1.0]}, 16)


def test_a_failed_add_leaves_both_hybrid_parts_unchanged(registries: Any) -> None:
    hybrid = build_retriever(registries, "hybrid", 8)
    with pytest.raises(PlugformerError, match=r"expected shape \(2, 8\)"):
        hybrid.add(chunks_for(2), np.ones((2, 9), dtype=np.float32))  # bm25 took them; faiss refused
    assert len(hybrid) == 0 and all(len(part) == 0 for part in hybrid.parts)


# -- a damaged saved index: one line naming the file -----------------------------------------------------------

SAVED = {"faiss": {"name": "faiss"}, "faiss-hnsw": {"name": "faiss", "index": "hnsw"},
         "faiss-ivf": {"name": "faiss", "index": "ivf", "nlist": 4}, "bm25": {"name": "bm25"},
         "hybrid": {"name": "hybrid"}}


def saved_index(registries: Any, node: dict[str, Any], directory: Path) -> list[Path]:
    retriever = build_retriever(registries, node, 16)
    vectors = clustered(50, 16, 4)
    retriever.add([Chunk(f"c{i}", f"chunk number {i}") for i in range(50)], vectors)
    retriever.delete(["c3"])
    retriever.save(directory)
    return sorted(p for p in directory.rglob("*") if p.is_file())


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing"])
@pytest.mark.parametrize("name", sorted(SAVED))
def test_a_damaged_file_of_a_saved_index_is_one_line_naming_it(registries: Any, tmp_path: Path, name: str,
                                                              damage: str) -> None:
    files = saved_index(registries, SAVED[name], tmp_path)
    assert files
    for path in files:
        original = path.read_bytes()
        if damage == "missing":
            path.unlink()
        else:
            path.write_bytes(b"\x00not what was saved\xff" if damage == "garbage" else original[:len(original) // 2])
        with pytest.raises(PlugformerError) as info:
            load_retriever(registries, SAVED[name], 16, tmp_path)
        message = str(info.value)
        assert "\n" not in message and path.name in message, f"{path.relative_to(tmp_path)} ({damage}): {message}"
        path.write_bytes(original)
    load_retriever(registries, SAVED[name], 16, tmp_path)  # restored, it loads again


def test_a_saved_index_refuses_another_index_type_or_dimension(registries: Any, tmp_path: Path) -> None:
    saved_index(registries, {"name": "faiss"}, tmp_path)
    with pytest.raises(PlugformerError, match="holds a faiss index=flat of dimension 16, but the config asks for "
                                              "index=hnsw of dimension 16"):
        load_retriever(registries, {"name": "faiss", "index": "hnsw"}, 16, tmp_path)
    with pytest.raises(PlugformerError, match="dimension 16, but the config asks for index=flat of dimension 8"):
        load_retriever(registries, {"name": "faiss"}, 8, tmp_path)


# -- config files ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["faiss", "bm25", "hybrid"])
def test_each_retriever_config_file_composes_to_its_schema_defaults(registries: Any, name: str) -> None:
    from hydra import compose, initialize_config_dir

    import plugformer.conf
    from plugformer.build import component_config
    from plugformer.config.store import store_component_configs

    entry = registries.retriever.get(name)
    store_component_configs(registries)  # what every command does (the train config's retriever group too)
    with initialize_config_dir(config_dir=str(Path(plugformer.conf.__file__).parent), version_base=None):
        node = compose(config_name=f"retriever/{name}").retriever  # a group's file composes under its group
        assert node.name == name and component_config(entry, node) == entry.load_schema()()
        if name == "faiss":
            tuned = compose(config_name="retriever/faiss",
                            overrides=["retriever.index=hnsw", "retriever.ef_search=128"]).retriever
            assert (tuned.index, tuned.ef_search) == ("hnsw", 128)
