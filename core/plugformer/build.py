"""Turns config nodes into objects: look the name up in its family's registry, bind the node's
parameters to the entry's schema, call the implementation with that schema instance."""
from __future__ import annotations

import dataclasses
from typing import Any

from omegaconf import DictConfig, OmegaConf

from plugformer.errors import ConfigError, PlugformerError, did_you_mean
from plugformer.families import FAMILIES
from plugformer.registry import Entry, Registries


#: fields the core adds to (and reads from) a family's config node; not passed to the implementation
#: (family -> field -> (type, default), from each :class:`plugformer.families.Family` record)
CORE_FIELDS: dict[str, dict[str, tuple[Any, Any]]] = {
    fam.name: {f.name: (f.type, f.default) for f in fam.core_fields} for fam in FAMILIES.values() if fam.core_fields
}


def node_params(node: Any, family: str = "") -> dict[str, Any]:
    """The node's fields except ``name`` and the core's own fields, as plain Python values."""
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    for key in ("name", *CORE_FIELDS.get(family, {})):
        data.pop(key, None)
    return data


def component_config(entry: Entry, node: Any) -> Any:
    """The entry's schema instance for ``node`` (None when the entry has no schema)."""
    schema = entry.load_schema()
    params = node_params(node, entry.family)
    if schema is None:
        if params:
            raise ConfigError(f"{entry.family} '{entry.name}' takes no options, got: {', '.join(params)}")
        return None
    fields = [f.name for f in dataclasses.fields(schema)]
    for key in params:
        if key not in fields:
            raise ConfigError(f"{entry.family} '{entry.name}' has no option '{key}'{did_you_mean(key, fields)}; "
                              f"valid keys: {', '.join(fields) or 'none'}")
    try:
        return schema(**params)
    except TypeError as exc:
        raise ConfigError(f"{entry.family} '{entry.name}': {exc}; valid keys: {', '.join(fields) or 'none'}") from None
    except ValueError as exc:  # a schema's own __post_init__ checks
        raise ConfigError(f"{entry.family} '{entry.name}': {exc}") from None


def build(registries: Registries, family: str, node: Any, *args: Any, **kwargs: Any) -> Any:
    """Build the component ``node.name`` of ``family`` as ``impl(config, *args, **kwargs)``."""
    name = node if isinstance(node, str) else node.get("name")
    entry = registries[family].get(name)
    config = component_config(entry, {} if isinstance(node, str) else node)
    impl = entry.load()
    try:
        return impl(config, *args, **kwargs)
    except PlugformerError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{family} '{name}': {exc}") from exc


def entry_class(registries: Registries, family: str, name: str) -> Any:
    """The implementation class itself (for classmethods such as ``Tokenizer.load``)."""
    return registries[family].get(name).load()


__all__ = ["CORE_FIELDS", "build", "component_config", "entry_class", "node_params"]
