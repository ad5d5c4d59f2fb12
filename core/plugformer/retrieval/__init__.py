"""Retrieval-augmented generation's core: building embedders and retrievers from config (the plugin families are
in :mod:`plugformer.interfaces.retrieval`), chunking documents, and the index directory that holds them."""
from plugformer.retrieval.components import (
    build_embedder,
    build_retriever,
    load_retriever,
    node_dict,
    retriever_context,
)

__all__ = ["build_embedder", "build_retriever", "load_retriever", "node_dict", "retriever_context"]
