#!/usr/bin/env python
"""Index scale: how approximate vector indexes trade recall for speed and memory at a million vectors.

One data set of ``--n`` unit vectors of dimension ``--dim`` with structure, the way embeddings have it (not
uniform noise, on which every approximate index fails, nor a few tight blobs, on which every one is trivially
right): a Gaussian mixture of ``--clusters`` components of power-law sizes whose centres lie near a
``--latent``-dimensional subspace, each point its centre plus anisotropic noise (a decaying spectrum in one
random rotation, a per-cluster spread), rows normalised. ``--queries`` held-out queries come from the same
mixture. Everything is seeded.

Four faiss indexes, inner product on the unit vectors (cosine), as the ``faiss`` retriever builds them:

- ``flat``: exact brute force, the reference (its top 10 are the truth for recall@10);
- ``hnsw``: a graph (``--hnsw-m`` links, ``--ef-construction``), searched with ``efSearch``;
- ``ivf``: ``nlist`` k-means lists (spherical k-means on a sample), full vectors in the lists, ``nprobe`` searched;
- ``ivfpq``: the same lists holding product-quantized residuals (``--pq-m`` bytes a vector).

For each: training and build seconds, recall@10 vs flat, single-query latency p50/p99 (one query per call,
``--latency-queries`` of them), batch throughput (all queries in one call), and memory: the index's serialized
bytes (what ``faiss.serialize_index`` writes) and the process's resident-memory growth while building it.
``efSearch`` and ``nprobe`` are chosen by a sweep (printed), doubling until recall reaches ``--target-recall``
or stops growing (a step gaining < 0.005): the value that reached it, else the smallest within 0.005 of the best
recall seen.
Ratios against flat and the issue's targets (>= 0.95 recall@10 at >= 10x lower latency than flat; IVF-PQ <= 1/8
of flat's memory) close the report.

    python benchmarks/index_scale.py --quick --threads 1  # 100k vectors (~3 min on one busy core)
    python benchmarks/index_scale.py --threads 2          # 1M vectors, the issue's figure (see benchmarks/README.md)
    python benchmarks/index_scale.py --threads 2 --json index_scale.json
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

K = 10
TARGET_SPEEDUP = 10.0
TARGET_PQ_MEMORY = 1 / 8
HNSW_EF = (16, 32, 64, 128, 256, 512)
IVF_NPROBE = (1, 2, 4, 8, 16, 32, 64, 128)
#: a sweep step that gains less recall than this ends the sweep (a plateau)
PLATEAU = 0.005


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="vectors indexed (default 1,000,000)")
    p.add_argument("--quick", action="store_true", help="100,000 vectors (overrides --n)")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--queries", type=int, default=1000, help="held-out queries (recall and batch throughput)")
    p.add_argument("--latency-queries", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--clusters", type=int, default=None, help="mixture components (default n/250: 4000 at 1M)")
    p.add_argument("--latent", type=int, default=64, help="dimension of the subspace the centres lie near")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--nlist", type=int, default=None, help="IVF lists (default sqrt(n), rounded to a power of 2)")
    p.add_argument("--pq-m", type=int, default=64, help="IVF-PQ bytes a vector (sub-quantizers of 8 bits)")
    p.add_argument("--train-size", type=int, default=None, help="k-means training sample (default 64 per list)")
    p.add_argument("--pq-train", type=int, default=10240,
                   help="vectors each PQ sub-quantizer trains on (faiss's k-means is slow on short sub-vectors)")
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--indexes", default="flat,hnsw,ivf,ivfpq", help="comma-separated subset (flat always runs)")
    p.add_argument("--threads", type=int, default=None, help="faiss OpenMP threads (default: faiss's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.n = 100_000
    if args.n < 1000 or args.dim < 8 or args.queries < 10 or args.latency_queries < 10:
        p.error("--n >= 1000, --dim >= 8, --queries >= 10 and --latency-queries >= 10")
    if args.dim % args.pq_m:
        p.error(f"--pq-m {args.pq_m} must divide --dim {args.dim}")
    unknown = set(args.indexes.split(",")) - {"flat", "hnsw", "ivf", "ivfpq"}
    if unknown:
        p.error(f"--indexes: unknown {', '.join(sorted(unknown))}; choose from flat, hnsw, ivf, ivfpq")
    args.clusters = args.clusters or max(16, args.n // 250)
    args.nlist = args.nlist or 2 ** round(math.log2(math.sqrt(args.n)))
    args.train_size = min(args.n, args.train_size or 64 * args.nlist)
    args.latency_queries = min(args.latency_queries, args.queries)
    return args


# -- data ------------------------------------------------------------------------------------------------------
def structured_vectors(n: int, dim: int, clusters: int, latent: int, seed: int, rows_per_step: int = 65536
                       ) -> np.ndarray:
    """``n`` unit float32 rows from the mixture described in the module docstring (generated in steps, so peak
    memory stays near the output's)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    centres = rng.standard_normal((clusters, latent)).astype(np.float32) @ basis
    centres += 0.15 * rng.standard_normal((clusters, dim)).astype(np.float32) / np.sqrt(dim)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = (np.arange(1, dim + 1) ** -0.6).astype(np.float32)
    spectrum *= 0.9 / np.linalg.norm(spectrum)  # noise of about 0.9 of a centre's length: clusters overlap
    shaping = (spectrum[:, None] * rotation.T).astype(np.float32)  # noise z -> (z * spectrum) @ rotation.T
    spread = rng.lognormal(0.0, 0.3, clusters).astype(np.float32)
    sizes = rng.pareto(1.5, clusters) + 1.0
    member = rng.choice(clusters, size=n, p=sizes / sizes.sum())
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, rows_per_step):
        c = member[start:start + rows_per_step]
        noise = rng.standard_normal((len(c), dim), dtype=np.float32) @ shaping
        block = centres[c] + noise * spread[c, None]
        out[start:start + len(c)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


# -- measuring -------------------------------------------------------------------------------------------------
def return_freed_memory_to_the_os() -> None:
    """Make glibc hand large freed blocks back to the OS (a fixed mmap threshold instead of its adaptive one), so
    the resident-memory growth of one index is not hidden by memory an earlier one freed. No-op elsewhere."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD: blocks over 1 MiB are mmapped and unmapped when freed
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int:
    """This process's resident memory (Linux ``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k each query's results contain."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth)]))


def batch_search(index: Any, queries: np.ndarray) -> tuple[np.ndarray, float]:
    """(ids of the top K of every query, queries per second) with all queries in one call."""
    started = time.perf_counter()
    _, ids = index.search(queries, K)
    return ids, len(queries) / (time.perf_counter() - started)


def single_latencies_ms(index: Any, queries: np.ndarray) -> np.ndarray:
    """Milliseconds of each query searched alone (one call per query, after one warm-up call)."""
    index.search(queries[:1], K)
    times = np.empty(len(queries))
    for i in range(len(queries)):
        started = time.perf_counter()
        index.search(queries[i:i + 1], K)
        times[i] = time.perf_counter() - started
    return times * 1000.0


@dataclass
class Result:
    """One index's figures (``setting``: the chosen efSearch/nprobe; ``sweep``: every value tried)."""

    name: str
    description: str
    train_s: float
    build_s: float
    recall_at_10: float
    p50_ms: float
    p99_ms: float
    batch_qps: float
    index_bytes: int
    rss_delta_bytes: int
    setting: dict[str, int] = field(default_factory=dict)
    sweep: list[dict[str, float]] = field(default_factory=list)


def measure(name: str, description: str, make: Any, data: np.ndarray, queries: np.ndarray, truth: np.ndarray,
            args: argparse.Namespace, knob: str | None = None, values: tuple[int, ...] = ()) -> Result:
    """Build ``make()`` (train on a sample if it needs it, add ``data``), sweep ``knob`` over ``values``, then time
    single queries and the batch at the chosen value."""
    gc.collect()
    rss_before = rss_bytes()
    index = make()
    started = time.perf_counter()
    if not index.is_trained:
        sample = np.random.default_rng(args.seed + 1).choice(len(data), size=args.train_size, replace=False)
        index.train(data[np.sort(sample)])
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    index.add(data)
    build_s = time.perf_counter() - started
    gc.collect()
    rss_delta = rss_bytes() - rss_before

    setting: dict[str, int] = {}
    sweep: list[dict[str, float]] = []
    if knob is not None:
        chosen = None
        for value in values:
            set_knob(index, knob, value)
            ids, qps = batch_search(index, queries)
            r = recall(ids, truth)
            sweep.append({knob: value, "recall_at_10": r, "batch_qps": qps})
            print(f"  {name:6s} {knob}={value:<4d} recall@10 {r:.4f}  batch {qps:9.0f} q/s", flush=True)
            if r >= args.target_recall:
                chosen = value
                break
            if len(sweep) > 1 and r - sweep[-2]["recall_at_10"] < PLATEAU:
                break  # more candidates no longer help (IVF-PQ: the codes' own error dominates)
        if chosen is None:  # never reached the target: the cheapest value within PLATEAU of the best recall
            best = max(s["recall_at_10"] for s in sweep)
            chosen = int(min(s[knob] for s in sweep if s["recall_at_10"] >= best - PLATEAU))
        setting = {knob: chosen}
        set_knob(index, knob, chosen)
    ids, qps = batch_search(index, queries)
    latencies = single_latencies_ms(index, queries[:args.latency_queries])
    size = serialized_bytes(index)
    del index
    gc.collect()
    return Result(name, description, train_s, build_s, recall(ids, truth), float(np.percentile(latencies, 50)),
                  float(np.percentile(latencies, 99)), qps, size, rss_delta, setting, sweep)


def serialized_bytes(index: Any) -> int:
    """The size of ``faiss.serialize_index(index)``, counted as faiss writes it instead of held in memory (a
    second copy of a 1 GB flat index would distort the memory figures)."""
    import faiss

    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


def set_knob(index: Any, knob: str, value: int) -> None:
    import faiss

    if knob == "efSearch":
        index.hnsw.efSearch = value
    else:
        faiss.extract_index_ivf(index).nprobe = value


# -- indexes ---------------------------------------------------------------------------------------------------
def index_makers(args: argparse.Namespace) -> dict[str, tuple[str, Any, str | None, tuple[int, ...]]]:
    """name → (description, constructor of an empty index, its search knob, the knob's sweep)."""
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT

    def hnsw() -> Any:
        index = faiss.IndexHNSWFlat(args.dim, args.hnsw_m, ip)
        index.hnsw.efConstruction = args.ef_construction
        return index

    def ivf(pq: bool) -> Any:
        quantizer = faiss.IndexFlatIP(args.dim)
        index = (faiss.IndexIVFPQ(quantizer, args.dim, args.nlist, args.pq_m, 8, ip) if pq
                 else faiss.IndexIVFFlat(quantizer, args.dim, args.nlist, ip))
        index.cp.spherical = True  # centroids on the unit sphere, as inner-product search wants
        index.cp.seed = args.seed
        if pq:
            index.pq.cp.max_points_per_centroid = max(39, args.pq_train // 256)  # 256 codes a sub-quantizer
        return index

    nprobe = tuple(v for v in IVF_NPROBE if v <= args.nlist)
    return {
        "flat": ("exact brute force", lambda: faiss.IndexFlatIP(args.dim), None, ()),
        "hnsw": (f"HNSW M={args.hnsw_m} efConstruction={args.ef_construction}", hnsw, "efSearch", HNSW_EF),
        "ivf": (f"IVF nlist={args.nlist}, flat lists", lambda: ivf(False), "nprobe", nprobe),
        "ivfpq": (f"IVF nlist={args.nlist}, PQ {args.pq_m}x8 bits", lambda: ivf(True), "nprobe", nprobe),
    }


# -- report ----------------------------------------------------------------------------------------------------
def mib(n: int) -> str:
    return f"{n / 2 ** 20:,.1f}"


def report(results: list[Result], args: argparse.Namespace, seconds: float) -> list[str]:
    """Print the table, the ratios against flat and the targets; return the target lines' verdicts."""
    flat = results[0]
    print(f"\n{args.n:,} vectors x {args.dim} (float32, unit rows), {args.queries} held-out queries, "
          f"{args.clusters} clusters, k={K}, threads={args.threads or 'faiss default'}; {seconds:.0f}s in all")
    header = (f"{'index':6s} {'setting':14s} {'train s':>8s} {'add s':>8s} {'recall@10':>9s} {'p50 ms':>8s} "
              f"{'p99 ms':>8s} {'batch q/s':>10s} {'index MiB':>10s} {'RSS+ MiB':>9s} {'x faster':>8s} "
              f"{'x memory':>8s}")
    print(header)
    print("-" * len(header))
    for r in results:
        setting = ",".join(f"{k}={v}" for k, v in r.setting.items()) or "-"
        print(f"{r.name:6s} {setting:14s} {r.train_s:8.2f} {r.build_s:8.2f} {r.recall_at_10:9.4f} {r.p50_ms:8.3f} "
              f"{r.p99_ms:8.3f} {r.batch_qps:10.0f} {mib(r.index_bytes):>10s} {mib(r.rss_delta_bytes):>9s} "
              f"{flat.p50_ms / r.p50_ms:8.1f} {r.index_bytes / flat.index_bytes:8.3f}")
    print("x faster: flat's p50 single-query latency / this one's; x memory: this index's bytes / flat's")
    verdicts = []
    for r in results[1:]:
        speedup = flat.p50_ms / r.p50_ms
        if r.name in ("hnsw", "ivf"):
            ok = r.recall_at_10 >= args.target_recall and speedup >= TARGET_SPEEDUP
            verdicts.append(f"{'PASS' if ok else 'MISS'} {r.name}: recall@10 {r.recall_at_10:.3f} (target >= "
                            f"{args.target_recall}) at {speedup:.1f}x lower p50 latency than flat (target >= "
                            f"{TARGET_SPEEDUP:.0f}x)")
        if r.name == "ivfpq":
            share = r.index_bytes / flat.index_bytes
            verdicts.append(f"{'PASS' if share <= TARGET_PQ_MEMORY else 'MISS'} ivfpq: {share:.3f} of flat's memory "
                            f"(target <= {TARGET_PQ_MEMORY:.3f}); recall@10 {r.recall_at_10:.3f}, "
                            f"{speedup:.1f}x lower p50 latency")
    for line in verdicts:
        print(line)
    return verdicts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    return_freed_memory_to_the_os()
    begun = time.perf_counter()
    started = time.perf_counter()
    # rows are independent draws from the mixture, so the last ones are held-out queries from the same distribution
    everything = structured_vectors(args.n + args.queries, args.dim, args.clusters, args.latent, args.seed)
    data, queries = everything[:args.n], everything[args.n:].copy()
    print(f"generated {args.n:,} + {args.queries} vectors in {time.perf_counter() - started:.1f}s "
          f"(faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads)", flush=True)

    started = time.perf_counter()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(data)
    _, truth = exact.search(queries, K)
    del exact
    print(f"exact top-{K} of every query in {time.perf_counter() - started:.1f}s", flush=True)

    makers = index_makers(args)
    wanted = ["flat"] + [name for name in ("hnsw", "ivf", "ivfpq") if name in args.indexes.split(",")]
    results = []
    for name in wanted:
        description, make, knob, values = makers[name]
        print(f"{name}: {description}", flush=True)
        results.append(measure(name, description, make, data, queries, truth, args, knob, values))
        print(f"  built in {results[-1].train_s + results[-1].build_s:.1f}s, recall@10 "
              f"{results[-1].recall_at_10:.4f}, p50 {results[-1].p50_ms:.3f} ms", flush=True)
    verdicts = report(results, args, time.perf_counter() - begun)
    if args.json:
        record = {"args": vars(args), "faiss": faiss.__version__, "seconds": time.perf_counter() - begun,
                  "results": [asdict(r) for r in results], "verdicts": verdicts}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
