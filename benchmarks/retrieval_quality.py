#!/usr/bin/env python
"""Retrieval quality on held-out ``stdlib_pairs``: each docstring of a held-out module searches every function of
the held-out modules for its own; recall@1, recall@10 and MRR@10 for

- **bm25**: lexical, over the functions' code;
- **untrained**: the pooled embeddings of a random-init model of the trained one's architecture and tokenizer;
- **trained**: the same architecture trained with ``plugformer train objective=contrastive data=stdlib_pairs``
  (the real CLI, in a subprocess; the training time is printed). It holds out ``data.val_fraction=0.2``: the test
  modules (those of :func:`held_out_pairs`, the default 0.1, a prefix of the same seeded module order) plus as many
  again as a dev split, so no test or dev function was trained on;
- **hybrid**: reciprocal-rank fusion of bm25 and trained with equal weights, and with the trained ranking's weight
  chosen on the dev split (``hybrid w=...``).

Retrievers come from the registry (``plugformer.retrieval.build_retriever``: ``bm25``, ``faiss`` flat, ``hybrid``)
when those plugins are installed; otherwise the script ranks with its own small functions (exact inner product in
numpy, bm25s over identifier-split words, :func:`plugformer.interfaces.reciprocal_rank_fusion`) and says so.

    python benchmarks/retrieval_quality.py                    # 6-10 minutes on 2 busy cores
    python benchmarks/retrieval_quality.py --steps 300 --json out.json
    python benchmarks/retrieval_quality.py --checkpoint runs/emb   # score an embedder trained before
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

K = 10


# -- training (the real CLI) -------------------------------------------------------------------------------------
def train(work: Path, args: argparse.Namespace) -> tuple[Path, float]:
    """Train the embedder with ``plugformer train``; returns its checkpoint and the wall time of the run."""
    overrides = ["objective=contrastive", "data=stdlib_pairs", f"objective.pooling={args.pooling}",
                 f"objective.temperature={args.temperature}", f"objective.symmetric={str(not args.one_way).lower()}",
                 f"data.hard_negatives={str(args.hard_negatives).lower()}",
                 f"tokenizer.vocab_size={args.vocab}", f"model.n_layers={args.layers}", f"model.d_model={args.d_model}",
                 f"model.n_heads={args.heads}", f"data.seq_len={args.seq_len}", f"trainer.batch_size={args.batch}",
                 f"trainer.max_steps={args.steps}", f"optimizer.lr={args.lr}", "optimizer.weight_decay=0.01",
                 f"scheduler.warmup_steps={max(1, args.steps // 20)}", "trainer.eval_every=0",
                 "trainer.callbacks=[metrics]", f"seed={args.seed}", f"threads={args.threads}", f"device={args.device}",
                 f"hydra.run.dir={work / 'emb'}", *args.override]
    env = {**os.environ, "PLUGFORMER_CACHE": str(work / "cache")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "plugformer", "train", *overrides], cwd=work, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"plugformer train failed:\n{proc.stderr[-3000:]}")
    return work / "emb" / "checkpoints" / "last", wall


# -- embedding -------------------------------------------------------------------------------------------------------
def embedder(model, tokenizer, max_tokens: int, pooling: str, device) -> Callable[[Sequence[str]], Any]:
    """texts → unit float32 rows: each text's tokens cut to ``max_tokens`` (as in training), pooled."""
    import numpy as np
    import torch
    from plugformer.retrieval import pooled_embeddings
    from plugformer.training.pairs import pad_texts

    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id

    def embed(texts: Sequence[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 64):
            rows = tokenizer.encode_batch([t[:max_tokens * 16] for t in texts[start:start + 64]])
            tokens, mask = pad_texts(rows, max_tokens, pad)
            with torch.no_grad():
                out.append(pooled_embeddings(model, tokens.to(device), mask.to(device), pooling).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    return embed


# -- ranking: the registry's retrievers, or the script's own -------------------------------------------------------
IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")


def words(text: str) -> list[str]:
    """Lower-case words, identifiers also split at underscores and camelCase (``parse_args`` → parse, args)."""
    found = []
    for token in re.findall(r"\w+", text):
        found.append(token.lower())
        parts = [p for piece in token.split("_") for p in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", piece)]
        if len(parts) > 1:
            found.extend(p.lower() for p in parts)
    return found


def own_bm25(docs: Sequence[str], queries: Sequence[str], k: int) -> list[list[str]]:
    import bm25s

    index = bm25s.BM25()
    index.index([words(d) or ["<empty>"] for d in docs], show_progress=False)
    ids, _ = index.retrieve([words(q) or ["<empty>"] for q in queries], k=min(k, len(docs)), show_progress=False)
    return [[str(i) for i in row] for row in ids.tolist()]


def own_dense(doc_vectors, query_vectors, k: int) -> list[list[str]]:
    import numpy as np

    scores = query_vectors @ doc_vectors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[str(i) for i in row] for row in top.tolist()]


def own_hybrid(first: list[list[str]], second: list[list[str]], k: int, weight: float = 1.0) -> list[list[str]]:
    """Reciprocal-rank fusion of two rankings per query, the second's ranks weighted by ``weight``."""
    from plugformer.interfaces import Hit, reciprocal_rank_fusion

    return [[h.id for h in reciprocal_rank_fusion([[Hit(i, 0.0) for i in a], [Hit(i, 0.0) for i in b]], k,
                                                  weights=[1.0, weight])]
            for a, b in zip(first, second)]


def registry_retrievers(registries) -> bool:
    """Whether the retriever plugins this script uses are installed (and their libraries available)."""
    names = ("bm25", "faiss", "hybrid")
    return all(n in registries.retriever and registries.retriever.get(n).availability()[0] for n in names)


def registry_search(registries, node: dict, docs: Sequence[str], doc_vectors, queries: Sequence[str],
                    query_vectors, k: int) -> list[list[str]]:
    from plugformer.interfaces import Chunk
    from plugformer.retrieval import build_retriever

    dim = None if doc_vectors is None else int(doc_vectors.shape[1])
    retriever = build_retriever(registries, node, dim)
    retriever.add([Chunk(str(i), d) for i, d in enumerate(docs)], doc_vectors)
    return [[h.id for h in hits] for hits in retriever.search(list(queries), query_vectors, k)]


# -- scores ------------------------------------------------------------------------------------------------------
def scores(ranked: list[list[str]], k: int = K) -> dict[str, float]:
    """recall@1, recall@k and MRR@k where query ``i``'s one relevant document is id ``str(i)``."""
    r1 = rk = mrr = 0.0
    for i, ids in enumerate(ranked):
        ids = ids[:k]
        if ids and ids[0] == str(i):
            r1 += 1
        if str(i) in ids:
            rk += 1
            mrr += 1 / (ids.index(str(i)) + 1)
    n = max(len(ranked), 1)
    return {"recall@1": r1 / n, f"recall@{k}": rk / n, f"mrr@{k}": mrr / n}


class Ranker:
    """The four rankings of one query set: from the registry's retrievers or the script's own functions."""

    def __init__(self, registries: Any, use_registry: bool):
        self.registries, self.use_registry = registries, use_registry

    def bm25(self, docs: Sequence[str], queries: Sequence[str]) -> list[list[str]]:
        if self.use_registry:
            return registry_search(self.registries, {"name": "bm25"}, docs, None, queries, None, FETCH)
        return own_bm25(docs, queries, FETCH)

    def dense(self, docs: Sequence[str], queries: Sequence[str], vectors: tuple[Any, Any]) -> list[list[str]]:
        if self.use_registry:
            return registry_search(self.registries, {"name": "faiss", "index": "flat"}, docs, vectors[0], queries,
                                   vectors[1], FETCH)
        return own_dense(vectors[0], vectors[1], FETCH)

    def hybrid(self, docs: Sequence[str], queries: Sequence[str], vectors: tuple[Any, Any], weight: float,
               bm25: list[list[str]], dense: list[list[str]]) -> list[list[str]]:
        """bm25 fused with the dense ranking (its ranks weighted by ``weight``)."""
        if self.use_registry:
            node = {"name": "hybrid", "first": {"name": "bm25"}, "second": {"name": "faiss", "index": "flat"},
                    "weights": [1.0, weight], "fetch_k": FETCH}
            return registry_search(self.registries, node, docs, vectors[0], queries, vectors[1], K)
        return own_hybrid(bm25, dense, K, weight)


#: candidates each part of a fusion contributes (and what the single rankings keep)
FETCH = 50
#: the dense ranking's weights in the fusion tried on the dev split
WEIGHTS = (0.1, 0.25, 0.5, 1.0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--pooling", default="mean", choices=["mean", "last"])
    p.add_argument("--one-way", action="store_true", help="query → positive only (default: symmetric, both ways)")
    p.add_argument("--hard-negatives", action="store_true")
    p.add_argument("--seq-len", type=int, default=64, help="tokens per text (training and embedding)")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--held-out", type=float, default=0.2, help="share of the pairs the training run holds out: the "
                   "test modules (held_out_pairs(), 0.1) plus dev modules, on which the hybrid's weight is chosen")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--override", action="append", default=[], help="an extra train override KEY=VALUE")
    p.add_argument("--own-retrievers", action="store_true", help="rank with the script's functions even when the "
                   "retriever plugins are installed")
    p.add_argument("--checkpoint", type=Path, default=None, help="score this contrastive checkpoint (trained on "
                   "stdlib_pairs with the same split) instead of training one")
    p.add_argument("--work", type=Path, default=None, help="keep the run here (default: a temporary directory)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import torch
    from plugformer.checkpoint import load_config, load_model_for_inference
    from plugformer.config import prepare
    from plugformer.model import build_model
    from plugformer_text.schemas import StdlibPairsConfig
    from plugformer_text.stdlib_pairs import StdlibPairs, held_out_pairs

    torch.set_num_threads(args.threads)
    if args.checkpoint is not None:
        trained_with = load_config(args.checkpoint)
        data = trained_with.data
        if data.name != "stdlib_pairs" or int(data.seed) != 0 or data.get("max_bytes") is not None:
            raise SystemExit(f"{args.checkpoint} was not trained on data=stdlib_pairs with the default seed and files")
        args.held_out = float(data.val_fraction)
    queries, docs = held_out_pairs()
    test_modules = StdlibPairs(StdlibPairsConfig()).val_modules
    wide = StdlibPairs(StdlibPairsConfig(val_fraction=args.held_out))
    if not test_modules < wide.val_modules:
        raise SystemExit(f"--held-out {args.held_out} does not hold out more than the test modules")
    dev = [pair for pair in wide.pairs("val") if pair.module not in test_modules]
    dev_queries, dev_docs = [pair.query for pair in dev], [pair.positive for pair in dev]
    print(f"held-out stdlib_pairs: {len(queries)} docstrings of {len(test_modules)} modules, each searching their "
          f"{len(docs)} functions; dev (for the hybrid's weight): {len(dev)} pairs of "
          f"{len(wide.val_modules) - len(test_modules)} other modules; training holds out both", flush=True)
    args.override = [f"data.val_fraction={args.held_out}", *args.override]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.checkpoint is None:
            checkpoint, train_wall = train(work, args)
        else:
            checkpoint, train_wall = args.checkpoint.resolve(), float("nan")
            checkpoint = checkpoint / "checkpoints" / "last" if (checkpoint / "checkpoints").is_dir() else checkpoint
        summary = json.loads((checkpoint.resolve().parents[1] / "summary.json").read_text())
        wall = f"{train_wall:.0f} s wall, " if args.checkpoint is None else ""
        print(f"trained {summary['step']} steps ({summary['params']:,} params) in {wall}"
              f"{summary['wall_s']:.0f} s in the training loop; final loss {summary['loss']:.3f}, "
              f"in-batch accuracy {summary.get('in_batch_accuracy', float('nan')):.2f}", flush=True)

        host = prepare()
        registries = host.registries
        loaded = load_model_for_inference(checkpoint, registries, device=args.device)
        trained, tokenizer, device = loaded.model.eval(), loaded.tokenizer, loaded.device
        torch.manual_seed(args.seed)
        config = load_config(checkpoint)
        untrained = build_model(config, registries, tokenizer.vocab_size).to(device).eval()
        pooling, seq_len = str(config.objective.pooling), int(config.data.seq_len)  # embed as it was trained

        vectors, dev_vectors = {}, None
        for name, model in (("untrained", untrained), ("trained", trained)):
            embed = embedder(model, tokenizer, seq_len, pooling, device)
            start = time.perf_counter()
            vectors[name] = (embed(docs), embed(queries))
            if name == "trained":
                dev_vectors = (embed(dev_docs), embed(dev_queries))
            print(f"embedded with the {name} model in {time.perf_counter() - start:.1f} s", flush=True)

    use_registry = not args.own_retrievers and registry_retrievers(registries)
    how = ("the registry's retrievers: bm25, faiss (flat), hybrid (bm25 + faiss, reciprocal-rank fusion)"
           if use_registry else "the script's own: bm25s over identifier-split words, numpy exact inner product, "
           "reciprocal-rank fusion")
    print(f"retrievers: {how}")
    ranker = Ranker(registries, use_registry)

    dev_bm25, dev_dense = ranker.bm25(dev_docs, dev_queries), ranker.dense(dev_docs, dev_queries, dev_vectors)
    dev_mrr = {w: scores(ranker.hybrid(dev_docs, dev_queries, dev_vectors, w, dev_bm25, dev_dense))["mrr@10"]
               for w in WEIGHTS}
    weight = max(WEIGHTS, key=lambda w: (dev_mrr[w], -w))
    print("dev MRR@10: bm25 {:.3f}, trained {:.3f}, hybrid by the dense weight: {}; chosen {}".format(
        scores(dev_bm25)["mrr@10"], scores(dev_dense)["mrr@10"],
        ", ".join(f"{w}: {m:.3f}" for w, m in dev_mrr.items()), weight))

    ranked = {"bm25": ranker.bm25(docs, queries)}
    for name in ("untrained", "trained"):
        ranked[name] = ranker.dense(docs, queries, vectors[name])
    ranked["hybrid"] = ranker.hybrid(docs, queries, vectors["trained"], 1.0, ranked["bm25"], ranked["trained"])
    tuned = f"hybrid w={weight}"
    ranked[tuned] = ranker.hybrid(docs, queries, vectors["trained"], weight, ranked["bm25"], ranked["trained"])

    results = {name: scores(r) for name, r in ranked.items()}
    print(f"\n{'method':<15} {'recall@1':>9} {'recall@10':>10} {'MRR@10':>8}")
    for name, r in results.items():
        print(f"{name:<15} {r['recall@1']:>9.3f} {r['recall@10']:>10.3f} {r['mrr@10']:>8.3f}")
    t, u, b = (results[n]["mrr@10"] for n in ("trained", "untrained", "bm25"))
    h = max(results["hybrid"]["mrr@10"], results[tuned]["mrr@10"])
    print(f"\ntargets: trained beats untrained clearly (MRR@10 {t:.3f} vs {u:.3f}: "
          f"{'yes' if t >= 1.5 * u and t - u >= 0.05 else 'NO'}); hybrid >= bm25 ({h:.3f} vs {b:.3f}: "
          f"{'yes' if h >= b else 'NO'})")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "queries": len(queries), "dev_pairs": len(dev),
                                         "dev_mrr_by_weight": dev_mrr, "weight": weight, "retrievers": how,
                                         "train_wall_s": train_wall, "train": summary, "args": {
                                             k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}},
                                        indent=2))


if __name__ == "__main__":
    main()
