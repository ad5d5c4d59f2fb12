"""Config schema of the ``qdrant`` retriever (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from plugformer.config import bounded

#: where the collection lives: ``memory``/``local`` in this process (qdrant-client's embedded local mode, exact
#: brute-force search), ``url`` on a Qdrant server (HNSW, scales past one machine)
LOCATIONS = ("memory", "local", "url")


@dataclass
class QdrantConfig:
    # memory: embedded, held in RAM; local: embedded, with qdrant's on-disk working store under `path`;
    # url: a Qdrant server at `url` (the index directory then records only the connection and collection)
    location: str = "memory"
    # local: the directory under which the embedded store keeps its working copy (a new subdirectory per retriever,
    # removed when it closes); the index directory, not this, is what persists the points
    path: Optional[str] = None
    # url: the server, e.g. http://qdrant.internal:6333
    url: Optional[str] = None
    # url: the API key; None reads the QDRANT_API_KEY environment variable (prefer it: an index's manifest records
    # this config node, so a key written here would be saved with the index)
    api_key: Optional[str] = None
    # the collection's name (url: on the server; one index per collection)
    collection: str = "plugformer"
    # url: HNSW graph links per node, and the candidate list size while building (qdrant's defaults)
    hnsw_m: int = bounded(16, ge=4, le=256)
    ef_construct: int = bounded(100, ge=4, le=65536)
    # url: candidates searched per query (a search option too); None: the server's default
    ef_search: Optional[int] = bounded(None, ge=1, le=65536)
    # url: brute-force exact search instead of HNSW (a search option too); embedded modes are always exact
    exact: bool = False
    # points per upsert request
    upsert_batch: int = bounded(256, ge=1, le=100000)
    # url: seconds a request may take
    timeout: int = bounded(60, ge=1, le=86400)
