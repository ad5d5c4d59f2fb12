"""Embedders: ``pooled`` (the pooled hidden states of any plugformer checkpoint, e.g. one trained with the
``contrastive`` objective) and ``wordllama`` (a small pretrained embedder whose weights ship inside its wheel,
so it works offline).

Registration only: nothing here imports torch or wordllama; targets, schemas and the availability check are
strings resolved on first use.
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register(registries):
    registries.embedder.register(
        "pooled", "plugformer_embed.pooled:PooledEmbedder", schema="plugformer_embed.schemas:PooledConfig",
        description="mean or last-token pooled final hidden states of a plugformer checkpoint, L2-normalised",
        capabilities={"devices": ["cpu", "cuda"], "roles": True})
    registries.embedder.register(
        "wordllama", "plugformer_embed.wordllama_embedder:WordLlamaEmbedder",
        schema="plugformer_embed.schemas:WordLlamaConfig",
        description="WordLlama's packaged token embeddings, average-pooled (offline: the weights ship in its wheel)",
        capabilities={"devices": ["cpu"], "roles": False},
        available="plugformer_embed.availability:wordllama_available")
