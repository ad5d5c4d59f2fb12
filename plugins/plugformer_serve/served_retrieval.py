"""What a server retrieves with: the embedder ``/v1/embeddings`` answers with and the index retrieval-augmented chat
reads, loaded from ``plugformer serve``'s ``embedder=``/``embedder.KEY=``, ``rag.*`` and ``search.KEY=`` settings.

With ``rag.index=DIR`` the embedder is the index's own (``embedder.KEY=VALUE`` overrides one of its recorded options,
e.g. ``embedder.device=cpu``; ``embedder=NAME`` must embed identically, else one line), so embeddings served and
passages retrieved come from one model. A lexical index (BM25: no embedder) serves embeddings only from an
``embedder=NAME`` given beside it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugformer import ConfigError
from plugformer.retrieval import RECORDED_EMBEDDER as RECORDED
from plugformer.retrieval import embedder_override
from plugformer.interfaces import check_search_options
from plugformer.retrieval import DEFAULT_TEMPLATE

if TYPE_CHECKING:
    from plugformer.interfaces import Embedder
    from plugformer import Registries
    from plugformer.retrieval import Index

@dataclass
class ServedRetrieval:
    """The embedder served under ``embedder_name`` (None: no ``/v1/embeddings``) and the index chat retrieves ``k``
    passages from with ``template`` and ``search_options`` (None: no retrieval-augmented chat)."""

    embedder: Embedder | None = None
    embedder_name: str | None = None
    index: Index | None = None
    k: int = 4
    template: str = DEFAULT_TEMPLATE
    search_options: dict[str, Any] = field(default_factory=dict)


def load_served_retrieval(registries: Registries, embedder: dict[str, Any] | None, index: str | Path | None, *,
                          k: int = 4, template: str = DEFAULT_TEMPLATE,
                          search_options: dict[str, Any] | None = None) -> ServedRetrieval | None:
    """Open the index and build the embedder (None when neither is asked for). ``embedder`` is a config node
    (``{"name": ..., **options}``; name :data:`RECORDED`: the index's embedder with these options on top)."""
    from plugformer.retrieval import Index, build_embedder

    search_options = dict(search_options or {})
    if index is None:
        if search_options:
            raise ConfigError(f"plugformer serve: search.{next(iter(search_options))} is set but there is no index "
                              "to search; add rag.index=DIR")
        if embedder is None or embedder.get("name") == RECORDED:
            if embedder and len(embedder) > 1:
                raise ConfigError(f"plugformer serve: embedder.{next(k for k in embedder if k != 'name')} is set but "
                                  "no embedder is chosen; add embedder=NAME (or rag.index=DIR to use its embedder)")
            return None
        built = build_embedder(registries, embedder)
        return ServedRetrieval(built, str(embedder["name"]))
    # the index's embedder node ({}: none, or no index there)
    recorded = embedder_override(str(index), {"name": RECORDED})
    overridden = embedder is not None and embedder != {"name": RECORDED}
    if not recorded.get("name"):  # a lexical index (or not an index: Index.open says so)
        opened = Index.open(index, registries)
        if overridden and embedder.get("name") == RECORDED:
            raise ConfigError(f"plugformer serve: rag.index={index} has no embedder (a lexical index), so embedder."
                              f"{next(k for k in embedder if k != 'name')} has nothing to set; give embedder=NAME to "
                              "serve /v1/embeddings beside it")
        check_search_options(opened.retriever, search_options)
        built = build_embedder(registries, embedder) if overridden else None
        return ServedRetrieval(built, str(embedder["name"]) if built else None, opened, k, template, search_options)
    node = embedder_override(str(index), embedder) if overridden else None
    opened = Index.open(index, registries, **({"embedder": node} if node else {}))
    check_search_options(opened.retriever, search_options)
    name = str((node or recorded)["name"])
    return ServedRetrieval(opened.embedder, name, opened, k, template, search_options)


__all__ = ["ServedRetrieval", "load_served_retrieval"]
