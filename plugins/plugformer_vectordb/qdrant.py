"""The ``qdrant`` retriever: chunks as points of a Qdrant collection, searched by cosine similarity.

A chunk id becomes the point id ``uuid5(CHUNK_NAMESPACE, chunk id)`` (Qdrant takes only unsigned ints and UUIDs)
and the chunk id itself is the point's payload ``chunk_id``, which search returns. Where the collection lives is
``location``:

- ``memory`` / ``local``: in this process (qdrant-client's embedded local mode, exact brute-force search). The
  index directory holds the points (:mod:`plugformer_vectordb.saved`); loading rebuilds the collection from them,
  so an index works after a restart and on another machine;
- ``url``: a Qdrant server or cluster (HNSW, ``hnsw_m``/``ef_construct``, ``ef_search``/``exact`` per search): the
  path when an index outgrows one machine. Adds and deletes reach the server at once; the index directory holds
  only the connection and collection (no key: ``api_key`` or ``QDRANT_API_KEY`` at load).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
import uuid
import warnings
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plugformer import ConfigError, PlugformerError
from plugformer.interfaces import (
    Chunk,
    Hit,
    Retriever,
    RetrieverContext,
    check_k,
    check_search_options,
    check_vectors,
)
from plugformer_vectordb import saved
from plugformer_vectordb.schemas import LOCATIONS, QdrantConfig

#: the namespace of the UUIDs chunk ids map to (fixed: changing it would orphan every saved server collection)
CHUNK_NAMESPACE = uuid.UUID("6f1c2a6e-3c1b-5a52-9d0e-7a1f6b0c2d41")
#: the payload key holding a point's chunk id
CHUNK_ID = "chunk_id"
API_KEY_ENV = "QDRANT_API_KEY"
_COLLECTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")
#: ids per retrieve request and queries per batch request
_REQUEST_ROWS = 1024


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of ``chunk_id``: a UUID derived from it, the same in every process."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, chunk_id))


def _chunk_id(point: Any) -> str:
    """The chunk id a point carries, or one line saying the collection holds a point plugformer did not write."""
    chunk_id = (point.payload or {}).get(CHUNK_ID)
    if not isinstance(chunk_id, str):
        raise PlugformerError(f"qdrant: point {point.id} has no {CHUNK_ID!r} payload (a collection written by "
                              "something else?)")
    return chunk_id


def _embedded(config: QdrantConfig) -> bool:
    return config.location in ("memory", "local")


def _check_config(config: QdrantConfig) -> None:
    if config.location not in LOCATIONS:
        raise ConfigError(f"retriever.location={config.location!r} is not one of {', '.join(LOCATIONS)}")
    if not _COLLECTION_NAME.fullmatch(str(config.collection)):
        raise ConfigError(f"retriever.collection={config.collection!r}: use 1-255 letters, digits, '_' or '-'")
    if config.location == "local" and not config.path:
        raise ConfigError("retriever.location=local needs retriever.path: a directory for qdrant's working store")
    if config.location == "url" and not config.url:
        raise ConfigError("retriever.location=url needs retriever.url, e.g. http://qdrant.internal:6333")


def _release(client: Any, scratch: Path | None) -> None:
    """Close the client and remove the embedded store's working directory (run once, by the finalizer)."""
    with contextlib.suppress(Exception):
        client.close()
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


class QdrantRetriever(Retriever):
    """A Qdrant collection holding one point per chunk (see the module docstring for the locations)."""

    search_options = ("ef_search", "exact")

    def __init__(self, config: QdrantConfig, context: RetrieverContext, *, _existing: bool = False):
        super().__init__(config, context)
        _check_config(config)
        if context.dim is None:
            raise ConfigError("retriever 'qdrant' searches vectors: it needs an embedder (embedder=...)")
        self.collection = config.collection
        self._client, scratch = self._connect()
        self._finalizer = weakref.finalize(self, _release, self._client, scratch)
        with self._server_errors("opening the collection"):
            if not _embedded(config):
                self._check_server()
            if _existing:
                self._check_existing()
            else:
                self._create()

    # -- connection -------------------------------------------------------------------------------------------
    def _connect(self) -> tuple[Any, Path | None]:
        from qdrant_client import QdrantClient

        config = self.config
        if config.location == "memory":
            return QdrantClient(location=":memory:"), None
        if config.location == "local":
            base = Path(config.path).expanduser()
            try:
                base.mkdir(parents=True, exist_ok=True)
                scratch = Path(tempfile.mkdtemp(prefix=f"qdrant-{self.collection}-", dir=base))
            except OSError as error:
                raise PlugformerError(f"retriever.path={config.path!r}: cannot create a store there ({error})") \
                    from None
            return QdrantClient(path=str(scratch)), scratch
        key = config.api_key or os.environ.get(API_KEY_ENV) or None
        # the versions are compared in _check_server, in this thread: qdrant-client's own check runs in a
        # background thread and only warns when the server does not answer
        try:
            return QdrantClient(url=config.url, api_key=key, timeout=config.timeout, check_compatibility=False), None
        except ValueError as error:  # a malformed address (urllib3's parse errors are ValueErrors too)
            raise ConfigError(f"retriever.url={config.url!r} is not a Qdrant server address "
                              f"(http[s]://host:port): {error}") from None

    def _check_server(self) -> None:
        """Ask the server for its version (a server that does not answer is one error line, here) and warn when
        qdrant-client's compatibility rule says it is too far from the installed client."""
        version = self._client.info().version
        try:
            from importlib.metadata import version as installed_version

            from qdrant_client.common.version_check import is_compatible
        except ImportError:  # an older qdrant-client without the rule
            return
        client = installed_version("qdrant-client")
        if not is_compatible(client, version):
            warnings.warn(f"qdrant server {self.config.url} runs Qdrant {version}, which qdrant-client {client} may "
                          "not speak to correctly (major versions should match, minor ones differ by at most 1)",
                          UserWarning, stacklevel=3)

    @contextlib.contextmanager
    def _server_errors(self, doing: str) -> Iterator[None]:
        """A server's refusal or absence as one line naming the server, the collection and what was being done."""
        from qdrant_client.http.exceptions import ApiException

        try:
            yield
        except ApiException as error:
            where = self.config.url if self.config.location == "url" else "in-process store"
            detail = " ".join(str(error).split())[:300]
            raise PlugformerError(f"qdrant ({where}, collection {self.collection!r}): {doing} failed: "
                                  f"{detail or type(error).__name__}") from None

    def _create(self) -> None:
        from qdrant_client import models

        if self._client.collection_exists(self.collection):
            raise PlugformerError(f"qdrant collection {self.collection!r} already exists at {self.config.url}; "
                                  "choose another retriever.collection, or delete it on the server first")
        hnsw = models.HnswConfigDiff(m=self.config.hnsw_m, ef_construct=self.config.ef_construct)
        self._client.create_collection(
            self.collection, vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.COSINE),
            hnsw_config=None if _embedded(self.config) else hnsw)

    def _check_existing(self) -> None:
        if not self._client.collection_exists(self.collection):
            raise PlugformerError(f"qdrant collection {self.collection!r} does not exist at {self.config.url}")
        params = self._client.get_collection(self.collection).config.params.vectors
        size = getattr(params, "size", None)
        if size != self.dim:
            raise PlugformerError(f"qdrant collection {self.collection!r} at {self.config.url} holds vectors of "
                                  f"dimension {size}, but the index's embedder has {self.dim}")

    def close(self) -> None:
        """Close the connection (and remove an embedded store's working directory); also done when collected."""
        self._finalizer()

    # -- the Retriever contract -------------------------------------------------------------------------------
    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray | None) -> None:
        chunks = list(chunks)
        vectors = check_vectors(vectors, len(chunks), self.dim, "qdrant: vectors")
        ids = [chunk.id for chunk in chunks]
        if len(set(ids)) != len(ids):
            repeated = next(i for n, i in enumerate(ids) if i in ids[:n])
            raise PlugformerError(f"qdrant: chunk id {repeated!r} appears twice in one add")
        present = self._present(ids)
        if present:
            shown = ", ".join(repr(i) for i in sorted(present)[:5]) + (", ..." if len(present) > 5 else "")
            raise PlugformerError(f"qdrant: {len(present)} chunk id(s) already indexed: {shown} (delete them first)")
        self._upsert(ids, vectors)

    def _upsert(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        from qdrant_client import models

        step = self.config.upsert_batch
        with self._server_errors("adding points"):
            for start in range(0, len(ids), step):
                batch = ids[start:start + step]
                self._client.upsert(self.collection, wait=True, points=models.Batch(
                    ids=[point_id(i) for i in batch], vectors=vectors[start:start + step].tolist(),
                    payloads=[{CHUNK_ID: i} for i in batch]))

    def _present(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the collection holds."""
        present: set[str] = set()
        with self._server_errors("looking up ids"):
            for start in range(0, len(ids), _REQUEST_ROWS):
                batch = ids[start:start + _REQUEST_ROWS]
                wanted = {point_id(i): i for i in batch}
                for record in self._client.retrieve(self.collection, ids=list(wanted), with_payload=[CHUNK_ID],
                                                    with_vectors=False):
                    stored, asked = (record.payload or {}).get(CHUNK_ID), wanted.get(str(record.id))
                    if stored != asked:
                        raise PlugformerError(f"qdrant: point {record.id} holds chunk {stored!r}, not {asked!r} "
                                              "(a collection written by something else?)")
                    present.add(asked)
        return present

    def delete(self, ids: Sequence[str]) -> int:
        from qdrant_client import models

        present = self._present(list(dict.fromkeys(ids)))
        if present:
            with self._server_errors("deleting points"):
                self._client.delete(self.collection, wait=True,
                                    points_selector=models.PointIdsList(points=[point_id(i) for i in present]))
        return len(present)

    def search(self, texts: Sequence[str], vectors: np.ndarray | None, k: int, **options: Any) -> list[list[Hit]]:
        from qdrant_client import models

        k = check_k(k)
        check_search_options(self, options)
        rows = len(texts) if texts is not None else len(vectors) if vectors is not None else 0
        vectors = check_vectors(vectors, rows, self.dim, "qdrant: query vectors")
        params = self._search_params(options)
        hits: list[list[Hit]] = []
        with self._server_errors("searching"):
            for start in range(0, len(vectors), _REQUEST_ROWS):
                requests = [models.QueryRequest(query=row.tolist(), limit=k, with_payload=[CHUNK_ID], params=params)
                            for row in vectors[start:start + _REQUEST_ROWS]]
                for response in self._client.query_batch_points(self.collection, requests=requests):
                    hits.append([Hit(_chunk_id(point), float(point.score)) for point in response.points])
        return hits

    def _search_params(self, options: dict[str, Any]) -> Any:
        """The server's HNSW knobs for one search (None in process: embedded search is always exact)."""
        from qdrant_client import models

        ef_search = options.get("ef_search", self.config.ef_search)
        exact = options.get("exact", self.config.exact)
        if ef_search is not None and (isinstance(ef_search, bool) or not isinstance(ef_search, int) or ef_search < 1):
            raise ConfigError(f"ef_search must be a positive integer, got {ef_search!r}")
        if not isinstance(exact, bool):
            raise ConfigError(f"exact must be true or false, got {exact!r}")
        if _embedded(self.config):
            return None
        return models.SearchParams(hnsw_ef=ef_search, exact=exact)

    def ids(self) -> Iterator[str]:
        offset = None
        while True:
            with self._server_errors("listing ids"):
                records, offset = self._client.scroll(self.collection, limit=_REQUEST_ROWS, offset=offset,
                                                      with_payload=[CHUNK_ID], with_vectors=False)
            for record in records:
                yield _chunk_id(record)
            if offset is None:
                return

    def __len__(self) -> int:
        with self._server_errors("counting points"):
            return int(self._client.count(self.collection, exact=True).count)

    def _points(self) -> tuple[list[str], np.ndarray]:
        """Every (chunk id, vector) in the collection, as lists in one order."""
        ids: list[str] = []
        rows: list[list[float]] = []
        offset = None
        with self._server_errors("reading points"):
            while True:
                records, offset = self._client.scroll(self.collection, limit=_REQUEST_ROWS, offset=offset,
                                                      with_payload=[CHUNK_ID], with_vectors=True)
                for record in records:
                    ids.append(_chunk_id(record))
                    rows.append(record.vector)
                if offset is None:
                    break
        return ids, np.asarray(rows, dtype=np.float32).reshape(len(ids), self.dim)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        manifest: dict[str, Any] = {"collection": self.collection, "dim": self.dim, "count": len(self)}
        if _embedded(self.config):
            ids, vectors = self._points()
            saved.write_points(directory, ids, vectors)
            manifest.update(location="in-process", count=len(ids))
        else:
            manifest.update(location="url", url=self.config.url)
        saved.write_manifest(directory, manifest)

    @classmethod
    def load(cls, config: QdrantConfig, context: RetrieverContext, directory: Path) -> QdrantRetriever:
        directory = Path(directory)
        manifest = saved.read_manifest(directory)
        where = directory / saved.MANIFEST
        if manifest.get("dim") != context.dim:
            raise PlugformerError(f"{where}: the collection holds vectors of dimension {manifest.get('dim')!r}, "
                                  f"but the index's embedder has {context.dim}")
        if manifest.get("location") == "url":
            if _embedded(config):
                raise PlugformerError(f"{where}: the points are on the Qdrant server {manifest.get('url')}; "
                                      f"load it with retriever.location=url, not {config.location}")
            config = dataclasses.replace(config, url=config.url or manifest.get("url"),
                                         collection=manifest.get("collection", config.collection))
            return cls(config, context, _existing=True)
        if manifest.get("location") != "in-process":
            raise PlugformerError(f"{where}: unknown location {manifest.get('location')!r}")
        if not _embedded(config):
            raise PlugformerError(f"{where}: the points were saved in this directory (an in-process collection); "
                                  f"load it with retriever.location=memory or local, not {config.location}")
        ids, vectors = saved.read_points(directory, context.dim)
        retriever = cls(config, context)
        retriever._upsert(ids, vectors)
        return retriever


__all__ = ["CHUNK_ID", "CHUNK_NAMESPACE", "QdrantRetriever", "point_id"]
