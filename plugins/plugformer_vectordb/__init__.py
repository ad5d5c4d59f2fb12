"""A retriever on an existing vector database: ``qdrant`` (through qdrant-client), the path when an index outgrows
one machine. In-process (qdrant-client's embedded local mode) it needs no server; ``location=url`` puts the same
collection on a Qdrant server or cluster.

Registration only: nothing here imports qdrant-client or numpy; the target, schema and availability check are
strings resolved on first use.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register(registries):
    registries.retriever.register(
        "qdrant", "plugformer_vectordb.qdrant:QdrantRetriever", schema="plugformer_vectordb.schemas:QdrantConfig",
        description="a Qdrant collection (in-process local mode, or a Qdrant server at url=) searched by cosine",
        capabilities={"persistent": True},
        available="plugformer_vectordb.availability:qdrant_available")
