"""The index directory: the one owner of its layout. An index holds

- ``index.json``: the manifest (format version, the embedder's config node and identity, the retriever's config
  node, the chunking settings, each source's digest, the chunk count, timestamps);
- ``chunks.jsonl``: every chunk's id, text and metadata (the retriever stores only what it searches with);
- ``retriever/``: the retriever's own files (the library's index format plus JSON/safetensors).

Everything on disk is JSON or a library's data format: opening an index never runs code from it (the config
nodes name registered components; nothing is imported from a path). Every save writes a new version of the
whole directory beside the old one and swaps it in (:func:`plugformer.checkpoint.durable.replacing_directory`),
so a crash keeps the last good index. :meth:`Index.sync` adds only new or changed documents.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugformer.errors import ConfigError, PlugformerError
from plugformer.interfaces.retrieval import (
    Chunk,
    Embedder,
    Retriever,
    check_k,
    check_search_options,
    identity_mismatch,
)
from plugformer.retrieval.chunking import Chunker, Document
from plugformer.retrieval.components import build_embedder, build_retriever, load_retriever, node_dict

if TYPE_CHECKING:
    import numpy as np

    from plugformer.registry import Registries

MANIFEST_FILE = "index.json"
CHUNKS_FILE = "chunks.jsonl"
RETRIEVER_DIR = "retriever"
#: the layout version this code writes and reads
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SearchResult:
    """A retrieved chunk and its retriever score (higher is nearer)."""

    chunk: Chunk
    score: float


@dataclass
class SyncReport:
    """What :meth:`Index.sync` changed: sources added, changed (re-chunked), unchanged, removed; chunk counts."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0

    def summary(self) -> str:
        return (f"{len(self.added)} new, {len(self.changed)} changed, {self.unchanged} unchanged, "
                f"{len(self.removed)} removed documents; +{self.chunks_added}/-{self.chunks_removed} chunks")


def _corrupt(directory: Path, what: str) -> PlugformerError:
    return PlugformerError(f"index {directory} is damaged: {what}; rebuild it with plugformer index build")


class Index:
    """Chunks, an optional embedder and one retriever, kept together.

    Build one with :meth:`create` (empty, in memory) and :meth:`sync`/:meth:`add`, write it with :meth:`save`;
    reopen it with :meth:`open`. :meth:`search` embeds the queries (role ``query``) when the retriever reads
    vectors and returns :class:`SearchResult` lists, best first.
    """

    def __init__(self, registries: Registries, *, retriever_node: dict[str, Any], retriever: Retriever,
                 embedder_node: dict[str, Any] | None, embedder: Embedder | None,
                 chunking: Mapping[str, Any] | None = None, chunks: dict[str, Chunk] | None = None,
                 sources: dict[str, str] | None = None, created: float | None = None):
        self.registries = registries
        self.retriever_node = retriever_node
        self.retriever = retriever
        self.embedder_node = embedder_node
        self.embedder = embedder
        self.chunking = dict(chunking) if chunking else None
        self.chunks: dict[str, Chunk] = chunks if chunks is not None else {}
        self.sources: dict[str, str] = sources if sources is not None else {}
        self.created = created if created is not None else time.time()

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def create(cls, registries: Registries, *, retriever: str | Mapping[str, Any],
               embedder: str | Mapping[str, Any] | None = None) -> Index:
        """A new, empty index with ``retriever`` (a name or config node) over ``embedder``'s vectors (None: a
        lexical retriever that reads text only)."""
        embedder_obj = build_embedder(registries, embedder) if embedder is not None else None
        retriever_obj = build_retriever(registries, retriever, embedder_obj.dim if embedder_obj else None)
        return cls(registries, retriever_node=node_dict(retriever), retriever=retriever_obj,
                   embedder_node=node_dict(embedder) if embedder is not None else None, embedder=embedder_obj)

    @classmethod
    def open(cls, directory: str | Path, registries: Registries, *,
             embedder: str | Mapping[str, Any] | None = None) -> Index:
        """The index saved in ``directory``. ``embedder`` replaces the recorded embedder node (a moved
        checkpoint, another device) but must embed identically: a different identity is refused in one line.
        A missing or damaged file is one line naming it."""
        from plugformer.checkpoint.durable import recover_directory

        directory = Path(directory).expanduser()
        recover_directory(directory)
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise PlugformerError(f"index={directory} is not an index ({MANIFEST_FILE} is missing); build one with "
                                  "plugformer index build")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            fmt, retriever_node = manifest["format"], manifest["retriever"]
            recorded_node, recorded_identity = manifest.get("embedder"), manifest.get("embedder_identity")
            expected = int(manifest["chunks"])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise _corrupt(directory, f"{MANIFEST_FILE} is unreadable ({type(exc).__name__}: {exc})") from None
        if fmt != FORMAT_VERSION:
            raise PlugformerError(f"index {directory} has format {fmt!r}; this plugformer reads format "
                                  f"{FORMAT_VERSION}: rebuild it with plugformer index build")
        node = node_dict(embedder) if embedder is not None else recorded_node
        embedder_obj = build_embedder(registries, node) if node is not None else None
        problem = identity_mismatch(recorded_identity, embedder_obj.identity() if embedder_obj else None)
        if problem:
            raise ConfigError(f"index {directory}: {problem}")
        chunks = _read_chunks(directory)
        if len(chunks) != expected:
            raise _corrupt(directory, f"{CHUNKS_FILE} holds {len(chunks)} chunks, the manifest says {expected}")
        try:
            retriever = load_retriever(registries, retriever_node, embedder_obj.dim if embedder_obj else None,
                                       directory / RETRIEVER_DIR)
        except PlugformerError as exc:
            raise _corrupt(directory, str(exc)) from None
        except Exception as exc:  # a library's own error reading its files
            raise _corrupt(directory, f"{RETRIEVER_DIR}/: {type(exc).__name__}: {exc}") from None
        indexed = len(retriever)
        if indexed != len(chunks):
            raise _corrupt(directory, f"the retriever holds {indexed} chunks, {CHUNKS_FILE} {len(chunks)}")
        return cls(registries, retriever_node=retriever_node, retriever=retriever, embedder_node=node,
                   embedder=embedder_obj, chunking=manifest.get("chunking"), chunks=chunks,
                   sources=dict(manifest.get("sources", {})), created=manifest.get("created"))

    # -- contents ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def embedder_identity(self) -> dict[str, Any] | None:
        return self.embedder.identity() if self.embedder is not None else None

    def _vectors(self, texts: Sequence[str], role: str, progress: bool) -> np.ndarray | None:
        if not self.retriever.uses_vectors:
            return None
        if self.embedder is None:  # build_retriever refuses this combination; kept as a guard for open()
            raise ConfigError("this index's retriever searches vectors but the index has no embedder")
        return self.embedder.embed_all(texts, role=role, progress=progress,  # type: ignore[arg-type]
                                       description=f"embedding {role}s")

    def add(self, chunks: Sequence[Chunk], *, progress: bool = False) -> None:
        """Embed (when the retriever reads vectors) and index ``chunks``; an id already present is an error."""
        seen: set[str] = set()
        for chunk in chunks:
            if chunk.id in self.chunks or chunk.id in seen:
                raise PlugformerError(f"chunk id {chunk.id!r} is already in the index")
            seen.add(chunk.id)
        if not chunks:
            return
        self.retriever.add(chunks, self._vectors([c.text for c in chunks], "passage", progress))
        self.chunks.update((c.id, c) for c in chunks)

    def delete(self, ids: Iterable[str]) -> int:
        """Remove chunks by id (unknown ids are ignored); returns how many were removed."""
        present = [i for i in dict.fromkeys(ids) if i in self.chunks]
        if present:
            self.retriever.delete(present)
            for i in present:
                del self.chunks[i]
        return len(present)

    def sync(self, documents: Iterable[Document], chunker: Chunker, *, prune: bool = False,
             progress: bool = False) -> SyncReport:
        """Bring the index up to date with ``documents``: new sources are chunked and added, changed ones (a new
        digest) replace their old chunks, unchanged ones cost nothing; with ``prune``, sources no longer given
        are removed. Chunk settings must match the index's (a different size would mix two chunkings)."""
        settings = chunker.settings()
        if self.chunking is not None and self.chunks and self.chunking != settings:
            raise ConfigError(f"this index was chunked with {self.chunking}, not {settings}: use the same chunk "
                              "settings, or build a new index")
        self.chunking = settings
        report, incoming, new_chunks, stale = SyncReport(), set(), [], []
        by_source: dict[str, list[str]] = {}
        for chunk_id, chunk in self.chunks.items():
            by_source.setdefault(str(chunk.metadata.get("source")), []).append(chunk_id)
        for document in documents:
            if document.source in incoming:
                raise PlugformerError(f"two documents have the source {document.source!r}; sources must be unique")
            incoming.add(document.source)
            digest = document.digest
            old = self.sources.get(document.source)
            if old == digest:
                report.unchanged += 1
                continue
            (report.changed if old is not None else report.added).append(document.source)
            stale.extend(by_source.get(document.source, []))
            new_chunks.extend(chunker.chunks(document))
            self.sources[document.source] = digest
        if prune:
            for source in sorted(set(self.sources) - incoming):
                report.removed.append(source)
                stale.extend(by_source.get(source, []))
                del self.sources[source]
        report.chunks_removed = self.delete(stale)
        self.add(new_chunks, progress=progress)
        report.chunks_added = len(new_chunks)
        return report

    def search(self, queries: Sequence[str], k: int = 5, **options: Any) -> list[list[SearchResult]]:
        """The ``k`` best chunks for each query, best first. ``options`` are the retriever's search-time knobs
        (``nprobe``, ``ef_search``, ...); an unknown one is refused naming the valid ones."""
        k = check_k(k)
        check_search_options(self.retriever, options)
        queries = [str(q) for q in queries]
        if not queries or not self.chunks:
            return [[] for _ in queries]
        vectors = self._vectors(queries, "query", progress=False)
        hits = self.retriever.search(queries, vectors, k, **options)
        return [[SearchResult(self.chunks[h.id], h.score) for h in row if h.id in self.chunks] for row in hits]

    # -- persistence ---------------------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """What ``index.json`` records (config nodes without secrets: an ``api_key`` is never written)."""
        return {"format": FORMAT_VERSION, "embedder": _without_secrets(self.embedder_node),
                "embedder_identity": self.embedder_identity, "dim": self.embedder.dim if self.embedder else None,
                "retriever": _without_secrets(self.retriever_node),
                "chunking": self.chunking, "chunks": len(self.chunks), "sources": self.sources,
                "created": self.created, "updated": time.time()}

    def save(self, directory: str | Path) -> Path:
        """Write the index to ``directory`` atomically (a new version swapped in; the old one kept on failure)."""
        from plugformer.checkpoint.durable import replacing_directory

        directory = Path(directory).expanduser()
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"out={directory} is a file, not an index directory")
        if directory.is_dir() and any(directory.iterdir()) and not (directory / MANIFEST_FILE).is_file():
            raise ConfigError(f"out={directory} is a non-empty directory that is not an index; choose another")
        with replacing_directory(directory) as tmp:
            (tmp / RETRIEVER_DIR).mkdir()
            self.retriever.save(tmp / RETRIEVER_DIR)
            with open(tmp / CHUNKS_FILE, "w", encoding="utf-8") as f:
                for chunk in self.chunks.values():
                    f.write(json.dumps({"id": chunk.id, "text": chunk.text, "metadata": dict(chunk.metadata)},
                                       ensure_ascii=False) + "\n")
            (tmp / MANIFEST_FILE).write_text(json.dumps(self.manifest(), indent=1, sort_keys=True), encoding="utf-8")
        return directory


#: option names never written into an index's manifest (they come from config or the environment at open)
SECRET_OPTIONS = ("api_key", "password", "token", "secret")


def _without_secrets(node: Any) -> Any:
    """``node`` (a config node, nested nodes included) without options named like a secret."""
    if isinstance(node, dict):
        return {k: _without_secrets(v) for k, v in node.items()
                if not any(word in str(k).lower() for word in SECRET_OPTIONS)}
    return node


def _read_chunks(directory: Path) -> dict[str, Chunk]:
    path = directory / CHUNKS_FILE
    chunks: dict[str, Chunk] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _corrupt(directory, f"{CHUNKS_FILE} is unreadable ({type(exc).__name__})") from None
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            chunk = Chunk(record["id"], record["text"], record.get("metadata") or {})
        except (json.JSONDecodeError, KeyError, TypeError, PlugformerError) as exc:
            raise _corrupt(directory, f"{CHUNKS_FILE}:{number} is not a chunk ({type(exc).__name__})") from None
        chunks[chunk.id] = chunk
    return chunks


__all__ = ["CHUNKS_FILE", "FORMAT_VERSION", "MANIFEST_FILE", "RETRIEVER_DIR", "Index", "SearchResult", "SyncReport"]
