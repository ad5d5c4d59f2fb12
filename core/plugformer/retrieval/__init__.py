"""Retrieval-augmented generation's core: building embedders and retrievers from config (the plugin families are
in :mod:`plugformer.interfaces.retrieval`), chunking documents, and the index directory that holds them."""
from plugformer.retrieval.chunking import Chunker, Document, chunk_documents, read_documents
from plugformer.retrieval.components import (
    RECORDED_EMBEDDER,
    embedder_override,
    build_embedder,
    build_retriever,
    load_retriever,
    node_dict,
    retriever_context,
)
from plugformer.retrieval.index import Index, SearchResult, SyncReport
from plugformer.retrieval.knowledge import PYDOC_TOPICS, pydoc_topics
from plugformer.retrieval.pooling import POOLINGS, pool, pooled_embeddings
from plugformer.retrieval.rag import RagAnswer, answer_questions, fitted_prompt
from plugformer.retrieval.prompt import DEFAULT_TEMPLATE, check_template, format_passages, rag_prompt

__all__ = ["DEFAULT_TEMPLATE", "POOLINGS", "PYDOC_TOPICS", "RECORDED_EMBEDDER", "Chunker", "Document", "Index",
           "RagAnswer", "SearchResult", "SyncReport", "answer_questions", "build_embedder", "build_retriever",
           "check_template", "chunk_documents", "embedder_override", "fitted_prompt", "format_passages",
           "load_retriever", "node_dict", "pool", "pooled_embeddings", "pydoc_topics", "rag_prompt", "read_documents",
           "retriever_context"]
