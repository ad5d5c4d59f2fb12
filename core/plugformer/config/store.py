"""Puts every registered component's schema into Hydra's ConfigStore.

For entry ``sdpa`` of family ``attention`` with schema ``SdpaConfig`` this stores a node class with a
``name: str = "sdpa"`` field plus the schema's fields, twice:

- ``plugformer_schema/attention/sdpa``: what YAML options extend (``- /plugformer_schema/attention/sdpa@_here_``),
  so a misspelled key or a wrong type in a YAML option or an override is an error naming the key;
- ``attention/sdpa``: a selectable option for plugins that ship no YAML. A YAML file of the same name in
  the search path takes precedence.
"""
from __future__ import annotations

import dataclasses
import typing
import warnings
from typing import Any

from hydra.core.config_store import ConfigStore

from plugformer.build import CORE_FIELDS
from plugformer.config.ranges import CORE_FIELD_RANGES, RANGE_KEY, Range
from plugformer.config.schema import (
    COMPONENT_GROUPS,
    OPTIONAL_GROUPS,
    FinetuneConfig,
    GenerateConfig,
    TrainConfig,
)
from plugformer.registry import Entry, Registries

SCHEMA_GROUP = "plugformer_schema"
CALLBACK_FAMILY = "callback"

# Hydra warns when a YAML option and a stored node share a name; plugformer relies on YAML winning.
warnings.filterwarnings("ignore", message=r"(?s).*is validated against ConfigStore schema with the same name")


def _range_metadata(declared: Range | None) -> dict[str, Range]:
    return {RANGE_KEY: declared} if declared is not None else {}


def node_class(entry: Entry) -> type:
    """A dataclass: ``name`` (fixed to the entry's name) followed by the core's fields of that family and the
    schema's own fields, each with its declared range (field metadata)."""
    schema = entry.load_schema()
    fields: list[Any] = [("name", str, dataclasses.field(default=entry.name))]
    core_ranges = CORE_FIELD_RANGES.get(entry.family, {})
    fields += [(key, typ, dataclasses.field(default=default, metadata=_range_metadata(core_ranges.get(key))))
               for key, (typ, default) in CORE_FIELDS.get(entry.family, {}).items()]
    if schema is not None:
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            default = ({"default": f.default} if f.default is not dataclasses.MISSING else
                       {"default_factory": f.default_factory} if f.default_factory is not dataclasses.MISSING
                       else {})
            fields.append((f.name, hints[f.name], dataclasses.field(**default, metadata=f.metadata)))
    cls_name = "".join(p.capitalize() for p in f"{entry.family}_{entry.name}".replace("-", "_").split("_")) + "Node"
    return dataclasses.make_dataclass(cls_name, fields)


#: (family, name) -> the entry whose nodes are in the ConfigStore: storing them again costs a command ~0.5 s
_stored: dict[tuple[str, str], Entry] = {}


def _in_store(cs: ConfigStore, group: str, name: str) -> bool:
    node: Any = cs.repo
    for part in group.split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return f"{name}.yaml" in node


def store_component_configs(registries: Registries) -> None:
    """Store schema nodes and default options for every entry of every config-group family (entries already
    stored, unchanged, are skipped)."""
    cs = ConfigStore.instance()
    for family in (*COMPONENT_GROUPS, *OPTIONAL_GROUPS):
        for entry in registries[family]:
            if _stored.get((family, entry.name)) is entry and _in_store(cs, family, entry.name) and \
                    _in_store(cs, f"{SCHEMA_GROUP}/{family}", entry.name):
                continue
            node = node_class(entry)
            cs.store(group=f"{SCHEMA_GROUP}/{family}", name=entry.name, node=node, provider=entry.provider)
            cs.store(group=family, name=entry.name, node=node, provider=entry.provider)
            _stored[(family, entry.name)] = entry
    cs.store(name="plugformer_train_schema", node=TrainConfig, provider="plugformer")
    cs.store(name="plugformer_generate_schema", node=GenerateConfig, provider="plugformer")
    cs.store(name="plugformer_finetune_schema", node=FinetuneConfig, provider="plugformer")
