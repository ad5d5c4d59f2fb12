"""One record per component family: the registries, the config groups, the builder's core fields, the
per-layer families and the model-transform groups all come from ``plugformer.FAMILIES``."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

import plugformer
from plugformer import FAMILIES, Family, Registries
from plugformer.registry import resolve


def test_every_family_has_a_registry_with_its_description_and_interface():
    regs = Registries()
    assert regs.families() == list(FAMILIES)
    for fam in FAMILIES.values():
        assert (regs[fam.name].family, regs[fam.name].description, regs[fam.name].interface) == \
            (fam.name, fam.description, fam.interface)


def test_each_interface_reference_resolves_to_the_contract_in_plugformer_interfaces():
    import plugformer.interfaces as interfaces

    for fam in FAMILIES.values():
        contract = resolve(fam.interface)
        assert getattr(interfaces, contract.__name__) is contract, fam.name


def test_the_records_are_read_only():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAMILIES["attention"].per_layer = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        FAMILIES["podcast"] = Family("podcast", "", None)  # type: ignore[index]


def test_config_groups_are_the_families_a_train_config_chooses():
    from plugformer.config.schema import COMPONENT_GROUPS, OPTIONAL_GROUPS, TrainConfig

    assert COMPONENT_GROUPS == ("tokenizer", "attention", "position", "norm", "mlp", "objective", "optimizer",
                                "scheduler", "parallel", "data", "adapter", "quantizer")
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(COMPONENT_GROUPS) <= train_keys
    assert set(OPTIONAL_GROUPS) <= train_keys  # retriever: a group a train config may leave null
    assert not {f for f in FAMILIES if f not in (*COMPONENT_GROUPS, *OPTIONAL_GROUPS)} & train_keys  # callback, server


def test_per_layer_families_are_the_ones_a_block_builds():
    from plugformer.model.assemble import LAYER_FAMILIES

    assert LAYER_FAMILIES == ("attention", "norm", "mlp")
    assert all(FAMILIES[f].config_group for f in LAYER_FAMILIES)


def test_transform_families_name_a_stage_and_the_built_ins_run_there():
    from plugformer.interfaces import Stage
    from plugformer.model.transforms import TRANSFORM_GROUPS

    assert TRANSFORM_GROUPS == ("adapter", "quantizer")
    regs = plugformer.get_registries()
    for name in TRANSFORM_GROUPS:
        stage = Stage[FAMILIES[name].transform_stage]
        for entry in regs[name]:
            if entry.name != "none" and entry.availability()[0]:
                assert entry.load().stage == stage, f"{name} '{entry.name}'"


def test_core_fields_reach_the_builder_and_the_stored_node():
    from plugformer.build import CORE_FIELDS, node_params

    assert CORE_FIELDS == {"data": {"seq_len": (int, 128), "cache_dir": (FAMILIES["data"].core_fields[1].type, None)}}
    assert node_params({"name": "text", "seq_len": 64, "cache_dir": None, "path": "x"}, "data") == {"path": "x"}


def test_reading_the_families_imports_no_torch():
    code = "import sys, plugformer; plugformer.FAMILIES['attention']; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
