"""Building the retrieval families' components from config nodes: the one place an embedder or a retriever is
constructed or loaded, so option checks, availability and nested retrievers work the same for every caller (the
index, the commands, the server, ``hybrid``)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugformer.errors import ConfigError, UnavailableError
from plugformer.interfaces.retrieval import Embedder, Retriever, RetrieverContext

if TYPE_CHECKING:
    from plugformer.registry import Registries


def _checked_config(registries: Registries, family: str, node: str | Mapping[str, Any]) -> tuple[Any, Any]:
    """(entry, schema instance) for ``node``: unknown names/keys, out-of-range values and unavailable libraries
    are one-line errors naming them."""
    from plugformer.build import component_config
    from plugformer.config.ranges import field_range

    if not isinstance(node, (str, Mapping)) or (isinstance(node, Mapping) and not node.get("name")):
        raise ConfigError(f"{family}: expected a name or a config node with 'name', got {node!r}")
    name = node if isinstance(node, str) else node.get("name")
    entry = registries[family].get(name)
    config = component_config(entry, {} if isinstance(node, str) else node)
    for f in dataclasses.fields(config) if config is not None else ():
        rng = field_range(f)
        problem = rng.problem(f"{family}.{f.name}", getattr(config, f.name)) if rng else None
        if problem:
            raise ConfigError(problem)
    ok, reason = entry.availability()
    if not ok:
        raise UnavailableError(f"{family} '{name}' is unavailable: {reason}")
    return entry, config


def build_embedder(registries: Registries, node: str | Mapping[str, Any]) -> Embedder:
    """The embedder named by ``node`` (a name, or a node with ``name`` and its options)."""
    entry, config = _checked_config(registries, "embedder", node)
    return entry.load()(config)


def retriever_context(registries: Registries, dim: int | None) -> RetrieverContext:
    """The context retrievers of an index with ``dim``-dimensional vectors (None: no embedder) are built in."""
    return RetrieverContext(dim=dim,
                            build=lambda child: build_retriever(registries, child, dim),
                            load=lambda child, directory: load_retriever(registries, child, dim, directory))


def build_retriever(registries: Registries, node: str | Mapping[str, Any], dim: int | None) -> Retriever:
    """A new, empty retriever named by ``node`` for ``dim``-dimensional vectors (None: the index has no
    embedder, so only retrievers that do not use vectors can serve it)."""
    entry, config = _checked_config(registries, "retriever", node)
    try:
        retriever = entry.load()(config, retriever_context(registries, dim))
    except (TypeError, ValueError) as exc:
        if dim is None:  # a dense retriever cannot even size itself without an embedder's dimension
            raise ConfigError(f"retriever '{entry.name}' searches vectors: it needs an embedder (embedder=...); "
                              f"{type(exc).__name__}: {exc}") from None
        raise ConfigError(f"retriever '{entry.name}': {exc}") from None
    if retriever.uses_vectors and dim is None:
        raise ConfigError(f"retriever '{entry.name}' searches vectors: it needs an embedder (embedder=...)")
    return retriever


def load_retriever(registries: Registries, node: str | Mapping[str, Any], dim: int | None,
                   directory: str | Path) -> Retriever:
    """The retriever named by ``node`` that was saved into ``directory``."""
    entry, config = _checked_config(registries, "retriever", node)
    return entry.load().load(config, retriever_context(registries, dim), Path(directory))


#: the embedder name meaning "the one the index records": ``embedder.device=cpu`` alone overrides one option
RECORDED_EMBEDDER = "recorded"


def embedder_override(directory: str | Path, override: Mapping[str, Any]) -> dict[str, Any]:
    """The embedder node to open the index in ``directory`` with: ``override`` itself when it names an embedder,
    else (name :data:`RECORDED_EMBEDDER`) the index's recorded node with ``override``'s options on top. ``{}``
    when the index records none (or ``directory`` holds no index)."""
    import json

    from plugformer.retrieval.index import MANIFEST_FILE

    if override.get("name") != RECORDED_EMBEDDER:
        return dict(override)
    try:
        recorded = json.loads((Path(directory).expanduser() / MANIFEST_FILE).read_text()).get("embedder") or {}
    except (OSError, ValueError):
        recorded = {}
    options = {k: v for k, v in override.items() if k != "name"}
    return {**recorded, **options} if recorded else {}


def node_dict(node: str | Mapping[str, Any]) -> dict[str, Any]:
    """A config node as a plain JSON-able dict with ``name`` (how an index records the retriever it holds)."""
    if isinstance(node, str):
        return {"name": node}
    from omegaconf import DictConfig, OmegaConf

    if isinstance(node, DictConfig):
        return dict(OmegaConf.to_container(node, resolve=True))
    return dict(node)


__all__ = ["RECORDED_EMBEDDER", "build_embedder", "build_retriever", "embedder_override", "load_retriever", "node_dict",
           "retriever_context"]
