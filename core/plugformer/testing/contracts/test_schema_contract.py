"""Schema and honesty contract, for every entry of every family.

- the config node a user writes (``node_class``: ``name`` plus the schema's fields) survives
  YAML: ``OmegaConf.structured`` → ``to_yaml`` → ``OmegaConf.create`` → merged back, unchanged, and
  (when nothing is required) binds to exactly the schema's defaults;
- an implementation that says it is available imports, honours its family's interface, and has a
  loadable schema (the family contracts then run it); one that is not gives a reason;
- declared capabilities are well-formed (device names, dtype names, boolean attention features).
"""
from __future__ import annotations

import dataclasses

import pytest
from omegaconf import OmegaConf

from plugformer.build import component_config
from plugformer.capabilities import ATTENTION_FEATURES
from plugformer.config.store import node_class
from plugformer.registry import Entry
from plugformer.testing.construct import label, required_fields

contract = pytest.mark.plugformer_contract
DEVICE_TYPES = {"cpu", "cuda", "mps", "xpu", "npu", "hpu", "meta"}


@contract(configured=False, available=False)
def test_schema_node_round_trips_through_yaml(entry: Entry) -> None:
    what = label(entry)
    node = node_class(entry)
    structured = OmegaConf.structured(node)
    assert structured.name == entry.name, f"{what}: node name {structured.name!r}"
    text = OmegaConf.to_yaml(structured)
    reloaded = OmegaConf.merge(OmegaConf.structured(node), OmegaConf.create(text))
    assert OmegaConf.to_container(reloaded) == OmegaConf.to_container(structured), \
        f"{what}: the node changed through YAML:\n{text}"
    if required_fields(entry):
        return  # the user must fill these in; the rest was checked above
    config = component_config(entry, reloaded)
    schema = entry.load_schema()
    if schema is not None:
        assert config == schema(), f"{what}: the YAML node binds to {config!r}, not the schema defaults"


@contract(configured=False, available=False)
def test_availability_is_honest(entry: Entry) -> None:
    ok, reason = entry.availability()
    what = label(entry)
    if not ok:
        assert reason.strip(), f"{what}: unavailable without saying why"
        pytest.skip(f"{what} is unavailable here: {reason}")
    impl = entry.load()  # raises naming the interface when the implementation does not honour it
    assert impl is not None, f"{what}: loads as None"
    schema = entry.load_schema()
    assert schema is None or dataclasses.is_dataclass(schema), f"{what}: schema is not a dataclass"


@contract(configured=False, available=False)
def test_capabilities_are_well_formed(entry: Entry) -> None:
    caps, what = entry.capabilities, label(entry)
    devices = caps.get("devices")
    if devices is not None:
        assert isinstance(devices, (list, tuple)) and devices, f"{what}: devices must be a non-empty list"
        assert set(devices) <= DEVICE_TYPES, f"{what}: unknown device types {sorted(set(devices) - DEVICE_TYPES)}"
    if "dtypes" in caps:
        import torch

        for name in caps["dtypes"]:
            dtype = getattr(torch, str(name), None)
            assert isinstance(dtype, torch.dtype) and dtype.is_floating_point, f"{what}: bad dtype {name!r}"
    needs = caps.get("needs_attention", [])
    assert set(needs) <= set(ATTENTION_FEATURES), \
        f"{what}: needs_attention names {sorted(set(needs) - set(ATTENTION_FEATURES))}, not attention features"
    if entry.family == "attention":
        for key in ATTENTION_FEATURES:
            assert isinstance(caps.get(key, False), bool), f"{what}: capability {key} must be true or false"


@contract(configured=False, available=False)
def test_every_numeric_option_declares_its_range(entry: Entry) -> None:
    """A numeric option without a range would accept 0 heads, a negative rate or NaN until something deep
    inside a run divides by it: declare one with ``plugformer.config.bounded`` (docs/plugins.md)."""
    from plugformer.config.ranges import field_range, unranged_numeric_fields

    node = node_class(entry)
    missing = unranged_numeric_fields(node)
    assert not missing, (f"{label(entry)}: numeric option(s) {', '.join(missing)} declare no valid range; write "
                         f"e.g. `{missing[0]}: int = bounded(8, ge=1)` (from plugformer.config import bounded)")
    defaults = OmegaConf.structured(node)
    for f in dataclasses.fields(node):
        declared = field_range(f)
        if declared is not None and not OmegaConf.is_missing(defaults, f.name):
            value = OmegaConf.to_container(defaults)[f.name]
            assert declared.problem(f.name, value) is None, f"{label(entry)}: the default is out of its own range: " \
                                                            f"{declared.problem(f.name, value)}"
