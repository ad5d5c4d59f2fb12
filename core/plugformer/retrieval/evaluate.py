"""Measuring retrieval: recall@k, MRR@10, nDCG@10 and query latency of an index over labelled queries.

A labelled query names what is relevant to it by chunk id or by source (a file, with or without its suffix, a
``pydoc:`` topic, a .jsonl line's id): a retrieved chunk is relevant when its id or its ``source`` is among
them, and each relevant item counts once. Queries come from a .jsonl file: ``{"query" (or "question"),
"relevant": [ids or sources]}`` or ``{"query", "source": "..."}``.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugformer.errors import PlugformerError
from plugformer.retrieval.chunking import DOCUMENT_SUFFIXES
from plugformer.retrieval.index import Index, SearchResult

#: the cut-offs recall is reported at
RECALL_AT = (1, 5, 10)
QUERY_KEYS = ("query", "question")
RELEVANT_KEYS = ("relevant", "source", "sources", "id")


@dataclass(frozen=True)
class LabelledQuery:
    """A query and the ids/sources relevant to it."""

    text: str
    relevant: frozenset[str]


def read_queries(path: str | Path) -> list[LabelledQuery]:
    """Labelled queries from a .jsonl file; a bad line is one error naming ``file:line`` and the keys it needs."""
    path = Path(path).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlugformerError(f"queries={path}: cannot read it ({type(exc).__name__})") from None
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PlugformerError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        text = next((record[k] for k in QUERY_KEYS if isinstance(record, dict) and isinstance(record.get(k), str)),
                    None)
        label = next((record[k] for k in RELEVANT_KEYS if isinstance(record, dict) and k in record), None)
        relevant = [label] if isinstance(label, str) else label
        if text is None or not isinstance(relevant, list) or not relevant or \
                not all(isinstance(r, str) for r in relevant):
            raise PlugformerError(f"{path}:{number}: a query line needs {' or '.join(QUERY_KEYS)} (a string) and "
                                  f"{' or '.join(RELEVANT_KEYS)} (an id/source or a list of them)")
        out.append(LabelledQuery(text, frozenset(relevant)))
    if not out:
        raise PlugformerError(f"queries={path} holds no queries")
    return out


def _relevant_ranks(results: Sequence[SearchResult], relevant: frozenset[str]) -> list[int]:
    """1-based ranks at which a not-yet-seen relevant item appears."""
    seen, ranks = set(), []
    for rank, result in enumerate(results, 1):
        source = str(result.chunk.metadata.get("source"))
        stem, dot, suffix = source.rpartition(".")
        names = {result.chunk.id, source, *((stem,) if dot and f".{suffix}" in DOCUMENT_SUFFIXES else ())}
        keys = names & relevant
        new = keys - seen
        if new:
            seen |= keys
            ranks.append(rank)
    return ranks


def score_rankings(rankings: Sequence[Sequence[SearchResult]], queries: Sequence[LabelledQuery]) -> dict[str, float]:
    """recall@1/5/10, MRR@10 and nDCG@10 averaged over ``queries`` (rankings of at least 10 results)."""
    totals = {f"recall@{k}": 0.0 for k in RECALL_AT} | {"mrr@10": 0.0, "ndcg@10": 0.0}
    for results, query in zip(rankings, queries):
        ranks = _relevant_ranks(results[:10], query.relevant)
        for k in RECALL_AT:
            totals[f"recall@{k}"] += sum(1 for r in ranks if r <= k) / len(query.relevant)
        totals["mrr@10"] += 1.0 / ranks[0] if ranks else 0.0
        ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(query.relevant), 10) + 1))
        totals["ndcg@10"] += sum(1.0 / math.log2(r + 1) for r in ranks) / ideal
    return {key: value / len(queries) for key, value in totals.items()}


def evaluate_index(index: Index, queries: Sequence[LabelledQuery], *, k: int = 10,
                   **search_options: Any) -> dict[str, float]:
    """Quality (:func:`score_rankings`) and latency of ``index`` over ``queries``: each query is searched on its
    own (embedding included), so ``latency_p50_ms``/``latency_p99_ms`` are what one user waits."""
    rankings, latencies = [], []
    for query in queries:
        start = time.perf_counter()
        rankings.append(index.search([query.text], max(k, 10), **search_options)[0])
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    scores = score_rankings(rankings, queries)
    scores["queries"] = float(len(queries))
    scores["latency_p50_ms"] = statistics.median(latencies)
    scores["latency_p99_ms"] = latencies[min(len(latencies) - 1, math.ceil(0.99 * len(latencies)) - 1)]
    return scores


__all__ = ["RECALL_AT", "LabelledQuery", "evaluate_index", "read_queries", "score_rankings"]
