"""Retrieval-augmented generation's core: building embedders and retrievers from config (the plugin families are
in :mod:`plugformer.interfaces.retrieval`), chunking documents, and the index directory that holds them."""
from plugformer.retrieval.chunking import Chunker, Document, chunk_documents, read_documents
from plugformer.retrieval.components import (
    build_embedder,
    build_retriever,
    load_retriever,
    node_dict,
    retriever_context,
)
from plugformer.retrieval.index import Index, SearchResult, SyncReport
from plugformer.retrieval.knowledge import PYDOC_TOPICS, pydoc_topics
from plugformer.retrieval.pooling import POOLINGS, pool, pooled_embeddings
from plugformer.retrieval.prompt import DEFAULT_TEMPLATE, check_template, format_passages, rag_prompt

__all__ = ["DEFAULT_TEMPLATE", "POOLINGS", "PYDOC_TOPICS", "Chunker", "Document", "Index", "SearchResult", "SyncReport",
           "build_embedder", "build_retriever", "check_template", "chunk_documents", "format_passages",
           "load_retriever", "node_dict", "pool", "pooled_embeddings", "pydoc_topics", "rag_prompt", "read_documents",
           "retriever_context"]
