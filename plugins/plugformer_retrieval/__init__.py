"""Retrievers for retrieval-augmented generation: ``faiss`` (dense vectors: flat, IVF, HNSW, IVF-PQ), ``bm25``
(lexical, through bm25s) and ``hybrid`` (reciprocal-rank fusion of any two retrievers).

Registration only: nothing here imports faiss, bm25s or numpy; targets, schemas and availability checks are
strings resolved on first use.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register(registries):
    registries.retriever.register(
        "faiss", "plugformer_retrieval.faiss_retriever:FaissRetriever",
        schema="plugformer_retrieval.schemas:FaissConfig",
        description="dense vectors in a faiss index (flat: exact; ivf, hnsw, ivfpq: approximate), inner product",
        capabilities={"persistent": True},
        available="plugformer_retrieval.availability:faiss_available")
    registries.retriever.register(
        "bm25", "plugformer_retrieval.bm25_retriever:BM25Retriever",
        schema="plugformer_retrieval.schemas:BM25Config",
        description="lexical BM25 over code-aware word tokens (bm25s), re-indexed after changes",
        capabilities={"persistent": True},
        available="plugformer_retrieval.availability:bm25s_available")
    registries.retriever.register(
        "hybrid", "plugformer_retrieval.hybrid_retriever:HybridRetriever",
        schema="plugformer_retrieval.schemas:HybridConfig",
        description="reciprocal-rank fusion of two retrievers (default: bm25 and faiss flat)",
        capabilities={"persistent": True})
