"""``plugformer eval retrieval``: recall@k, MRR@10, nDCG@10 and latency of an index over labelled queries; with
``-m``, of every combination of embedders, retrievers and options, side by side (a sweep)."""
from __future__ import annotations

import csv
import io
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

from plugformer.commands import component_nodes, parse_keyvalues, positive_int
from plugformer.errors import ConfigError

SWEPT = ("embedder", "retriever", "search")
METRICS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "latency_p50_ms", "latency_p99_ms")

USAGE = """\
usage: plugformer eval retrieval queries=FILE.jsonl index=DIR [k=10] [search.KEY=VALUE ...] [out=FILE]
       plugformer eval retrieval queries=FILE.jsonl [data.path=DIR] [embedder=...] [retriever=...] [-m] [out=FILE]

Searches every query of queries= (one JSON object per line: {"query": ..., "relevant": [chunk ids or
sources]}, or "question"/"source") and reports recall@1/5/10, MRR@10, nDCG@10 and the p50/p99 latency of
one query (embedding included). With index= it evaluates that index; otherwise it builds one in memory from
data.path (default: the Python documentation topics) with the embedder/retriever given (as index build does).
-m: comma-separated values of embedder/retriever/search keys are swept (retriever=bm25,faiss,hybrid), every
combination is built and evaluated, and one table compares them. out=FILE.json or .csv writes the rows
(never overwriting a file).

examples:
  plugformer eval retrieval index=idx/ queries=held_out.jsonl
  plugformer eval retrieval -m data.path=kb/ queries=q.jsonl retriever=bm25,faiss,hybrid out=sweep.csv
"""


def _combinations(args: list[str], multirun: bool) -> list[list[str]]:
    """Every argument list of the sweep: ``key=a,b`` arguments of the swept families expand (outside brackets)."""
    choices = []
    for arg in args:
        key, eq, value = arg.partition("=")
        swept = multirun and eq and key.partition(".")[0] in SWEPT and "," in value and value[:1] not in "[{"
        choices.append([f"{key}={v}" for v in value.split(",")] if swept else [arg])
    return [list(c) for c in itertools.product(*choices)]


def _label(args: list[str], swept_keys: list[str]) -> str:
    return " ".join(a for a in args if a.partition("=")[0] in swept_keys) or "index"


def _evaluate(args: list[str], registries: Any) -> tuple[dict[str, float], float]:
    from plugformer.cli.index_command import DEFAULT_EMBEDDER, DEFAULT_RETRIEVER
    from plugformer.retrieval import PYDOC_TOPICS, Chunker, Index, pydoc_topics, read_documents
    from plugformer.retrieval.evaluate import evaluate_index, read_queries

    rest, nodes = component_nodes("eval retrieval", args, SWEPT,
                                  defaults={"embedder": DEFAULT_EMBEDDER, "retriever": DEFAULT_RETRIEVER,
                                            "search": "search"})
    keys = ("queries", "index", "k", "data.path", "chunk.size", "chunk.overlap", "out")
    values = parse_keyvalues("eval retrieval", rest, keys, required=("queries",))
    options = {k: v for k, v in (nodes["search"] or {}).items() if k != "name"}
    queries = read_queries(values["queries"])
    k = positive_int("eval retrieval", values, "k") or 10
    start = time.perf_counter()
    if "index" in values:
        index = Index.open(values["index"], registries)
    else:
        index = Index.create(registries, retriever=nodes["retriever"], embedder=nodes["embedder"])
        source = values.get("data.path", PYDOC_TOPICS)
        chunker = Chunker(size=positive_int("eval retrieval", values, "chunk.size") or Chunker.size,
                          overlap=int(values.get("chunk.overlap", Chunker.overlap)))
        index.sync(pydoc_topics() if source == PYDOC_TOPICS else read_documents(source), chunker, progress=True)
    build_s = time.perf_counter() - start
    return evaluate_index(index, queries, k=k, **options), build_s


def _table(rows: list[dict[str, Any]]) -> str:
    header = ["config", *METRICS, "build_s"]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for row in rows:
        cells = [row["config"], *(f"{row[m]:.3f}" if "recall" in m or "@" in m else f"{row[m]:.1f}"
                                  for m in METRICS), f"{row['build_s']:.1f}"]
        lines.append(" | ".join(cells))
    return "\n".join(lines)


def _write(out: Path, rows: list[dict[str, Any]]) -> None:
    from plugformer.checkpoint import check_new_file
    from plugformer.checkpoint.durable import write_text_atomic

    out = check_new_file(out)
    if out.suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(out, buffer.getvalue())
    elif out.suffix == ".json":
        write_text_atomic(out, json.dumps(rows, indent=1) + "\n")
    else:
        raise ConfigError(f"out={out}: write .json or .csv")


def run(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    multirun = "-m" in args or "--multirun" in args
    args = [a for a in args if a not in ("-m", "--multirun")]
    out = next((a.partition("=")[2] for a in args if a.startswith("out=")), None)
    if out is not None:
        from plugformer.checkpoint import check_new_file

        check_new_file(out)  # refused before any work
    combos = _combinations(args, multirun)
    swept_keys = sorted({a.partition("=")[0] for a in args if multirun and a.partition("=")[0].partition(".")[0]
                         in SWEPT and "," in a.partition("=")[2]})
    from plugformer import load_plugins

    registries = load_plugins().registries
    rows = []
    for number, combo in enumerate(combos, 1):
        label = _label(combo, swept_keys) if multirun else _label(combo, [a.partition("=")[0] for a in combo
                                                                          if a.partition("=")[0].partition(".")[0]
                                                                          in SWEPT])
        if len(combos) > 1:
            print(f"[{number}/{len(combos)}] {label}", file=sys.stderr, flush=True)
        metrics, build_s = _evaluate([a for a in combo if not a.startswith("out=")], registries)
        rows.append({"config": label, **{m: metrics[m] for m in METRICS}, "queries": int(metrics["queries"]),
                     "build_s": build_s})
    print(_table(rows))
    if out is not None:
        _write(Path(out), rows)
        print(f"wrote {out}", file=sys.stderr)
    return 0


__all__ = ["run"]
