"""``plugformer index build|query``: build (or bring up to date) an index directory from documents, and search it."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from plugformer.commands import component_nodes, parse_keyvalues, positive_int
from plugformer.errors import ConfigError

#: what ``index build`` uses when no embedder/retriever is named: a packaged embedder (no training, no download)
#: and reciprocal-rank fusion of BM25 with exact dense search, the combination benchmarks/retrieval_quality.py favours
DEFAULT_EMBEDDER = "wordllama"
DEFAULT_RETRIEVER = "hybrid"

USAGE = """\
usage: plugformer index build [data.path=PATH] out=DIR [embedder=NAME] [embedder.KEY=VALUE ...]
                              [retriever=NAME] [retriever.KEY=VALUE ...] [chunk.size=200] [chunk.overlap=40]
                              [prune=true]
       plugformer index query index=DIR query=TEXT [k=5] [search.KEY=VALUE ...] [embedder.KEY=VALUE ...]
                              [json=true]

build: reads .txt/.md/.jsonl documents under data.path (default: the Python documentation topics that ship
with CPython, data.path=pydoc_topics), splits them into chunks of chunk.size words overlapping by
chunk.overlap, embeds them (embedder, default wordllama) and indexes them (retriever, default hybrid: BM25
fused with exact dense search). Run it again on the same out= to add only new or changed documents
(prune=true also drops documents that are gone). embedder=none builds a lexical index (retriever=bm25).

query: prints the k best chunks with their scores and sources. search.KEY sets a retriever's search-time
knob (search.nprobe=16, search.ef_search=128); embedder.KEY overrides the recorded embedder (it must embed
identically: a different one is refused).

examples:
  plugformer index build out=idx/
  plugformer index build data.path=kb/ embedder=pooled embedder.checkpoint=runs/emb/checkpoints/last \\
      retriever=faiss retriever.index=hnsw out=idx/
  plugformer index query index=idx/ query="how do I parse command-line flags" k=5
"""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _flag(values: dict[str, str], key: str) -> bool:
    value = values.get(key, "false").lower()
    if value not in ("true", "false"):
        raise ConfigError(f"plugformer index: {key}={values[key]!r} must be true or false")
    return value == "true"


def build(args: list[str]) -> int:
    from plugformer import load_plugins
    from plugformer.retrieval import PYDOC_TOPICS, Chunker, Index, pydoc_topics, read_documents
    from plugformer.retrieval.index import MANIFEST_FILE

    rest, nodes = component_nodes("index build", args, ("embedder", "retriever"),
                                  defaults={"embedder": DEFAULT_EMBEDDER, "retriever": DEFAULT_RETRIEVER})
    values = parse_keyvalues("index build", rest, ("data.path", "out", "prune", "chunk.size", "chunk.overlap"),
                             required=("out",))
    chunker = Chunker(size=positive_int("index build", values, "chunk.size") or Chunker.size,
                      overlap=_whole("chunk.overlap", values.get("chunk.overlap", str(Chunker.overlap))))
    out, source = Path(values["out"]).expanduser(), values.get("data.path", PYDOC_TOPICS)
    documents = pydoc_topics() if source == PYDOC_TOPICS else read_documents(source)
    registries = load_plugins().registries
    start = time.perf_counter()
    if (out / MANIFEST_FILE).is_file():
        index = Index.open(out, registries, **({"embedder": nodes["embedder"]} if "embedder" in _given(args) else {}))
        if "retriever" in _given(args) and nodes["retriever"] != index.retriever_node:
            raise ConfigError(f"out={out} is an index with retriever {index.retriever_node}; to change the retriever "
                              "build a new index (another out=)")
        _progress(f"updating index {out} ({len(index)} chunks)")
    else:
        index = Index.create(registries, retriever=nodes["retriever"], embedder=nodes["embedder"])
        _progress(f"building index {out} (embedder {nodes['embedder'] and nodes['embedder']['name']}, "
                  f"retriever {nodes['retriever']['name']})")
    report = index.sync(documents, chunker, prune=_flag(values, "prune"), progress=True)
    index.save(out)
    print(f"index {out}: {len(index)} chunks from {len(index.sources)} documents ({report.summary()}) in "
          f"{time.perf_counter() - start:.1f} s")
    return 0


def _whole(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"plugformer index build: {key}={value!r} must be a whole number") from None


def _given(args: list[str]) -> set[str]:
    """The families an argument list names explicitly (``embedder=``/``embedder.*``)."""
    return {a.partition("=")[0].partition(".")[0] for a in args if "=" in a}


def query(args: list[str]) -> int:
    from plugformer import load_plugins
    from plugformer.retrieval import Index
    from plugformer.retrieval.components import RECORDED_EMBEDDER as RECORDED
    from plugformer.retrieval.components import embedder_override

    rest, nodes = component_nodes("index query", args, ("embedder", "search"),
                                  defaults={"search": "search", "embedder": RECORDED})
    if nodes["search"] is None or nodes["search"]["name"] != "search":
        raise ConfigError("plugformer index query: search takes options only (search.nprobe=16), not search=NAME")
    values = parse_keyvalues("index query", rest, ("index", "query", "k", "json"), required=("index", "query"))
    options = dict(nodes["search"] or {})
    options.pop("name", None)
    k = positive_int("index query", values, "k") or 5
    embedder = nodes["embedder"] if nodes["embedder"] != {"name": RECORDED} else None
    registries = load_plugins().registries
    index = Index.open(values["index"], registries,
                       **({"embedder": embedder_override(values["index"], embedder)} if embedder else {}))
    start = time.perf_counter()
    results = index.search([values["query"]], k, **options)[0]
    elapsed = (time.perf_counter() - start) * 1000
    if _flag(values, "json"):
        for rank, r in enumerate(results, 1):
            print(json.dumps({"rank": rank, "id": r.chunk.id, "score": r.score, "text": r.chunk.text,
                              "metadata": dict(r.chunk.metadata)}, ensure_ascii=False))
        return 0
    for rank, r in enumerate(results, 1):
        text = " ".join(r.chunk.text.split())
        print(f"{rank:>2}. {r.score:8.4f}  {r.chunk.id}\n    {text[:200]}{'...' if len(text) > 200 else ''}")
    print(f"({len(results)} of {len(index)} chunks, {elapsed:.1f} ms)", file=sys.stderr)
    return 0


SUBCOMMANDS = {"build": build, "query": query}


def run(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    command = SUBCOMMANDS.get(args[0])
    if command is None:
        raise ConfigError(f"plugformer index: unknown subcommand {args[0]!r}; subcommands: {', '.join(SUBCOMMANDS)}")
    return command(args[1:])


__all__ = ["DEFAULT_EMBEDDER", "DEFAULT_RETRIEVER", "run"]
