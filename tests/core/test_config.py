"""Composing train configs: named options, one-line errors for typos and bad values, plugin schemas
without YAML, and validation of combinations before anything heavy runs."""
# no `from __future__ import annotations`: the schemas below are read with typing.get_type_hints
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import plugformer.conf
from plugformer import ConfigError, PlugformerError
from plugformer.config import compose_checked, prepare
from plugformer.config.schema import COMPONENT_GROUPS, SCHEMA_VERSION
from plugformer.config.validate import validate_train

CONF_DIR = Path(plugformer.conf.__path__[0])
TINY = ["model.n_layers=1", "model.d_model=32", "model.n_heads=4", "data.seq_len=16"]


@dataclass
class WindowConfig:
    window: int = 64


def compose(host, *overrides):
    return compose_checked("train", list(overrides), host)


def compose_error(host, *overrides) -> str:
    with pytest.raises(PlugformerError) as err:
        compose(host, *overrides)
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_defaults_compose(host):
    assert prepare() is host
    cfg = compose(host)
    assert {g: cfg[g].name for g in COMPONENT_GROUPS} == {
        "tokenizer": "bpe", "attention": "sdpa", "position": "rope", "norm": "layernorm", "mlp": "gelu",
        "objective": "clm", "optimizer": "adamw", "scheduler": "cosine", "parallel": "single", "data": "stdlib",
        "adapter": "none", "quantizer": "none"}
    assert cfg.model.n_layers == 4 and cfg.position.base == 10000.0 and cfg.schema_version == SCHEMA_VERSION


def test_options_are_chosen_by_name_with_their_own_keys(host):
    prepare()
    cfg = compose(host, "attention=naive", "position=learned", "position.init_std=0.5", "optimizer=sgd",
                  "optimizer.momentum=0.5", "model.n_layers=2", "precision=bf16")
    assert (cfg.attention.name, cfg.position.name, cfg.position.init_std) == ("naive", "learned", 0.5)
    assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.model.n_layers) == ("sgd", 0.5, 2)
    assert cfg.precision.value == "bf16" and "base" not in cfg.position


def test_misspelled_key_names_it_its_siblings_and_a_guess(host):
    prepare()
    msg = compose_error(host, "model.n_layerz=3")
    assert "'model.n_layerz'" in msg and "did you mean 'n_layers'" in msg
    assert "keys of 'model': n_layers, d_model, n_heads" in msg


def test_misspelled_key_of_a_chosen_option_lists_that_options_keys(host):
    prepare()
    msg = compose_error(host, "position=sinusoidal", "position.bse=3")
    assert "'position.bse'" in msg and "did you mean 'base'" in msg and "keys of 'position': name, base" in msg


@pytest.mark.parametrize("override, named", [
    ("model.n_layers=abc", "model.n_layers=abc"),
    ("precision=bf17", "precision=bf17"),
])
def test_wrong_type_names_the_override(host, override, named):
    prepare()
    msg = compose_error(host, override)
    assert f"bad value in '{named}'" in msg
    if "precision" in override:
        assert "fp32" in msg and "bf16" in msg


def test_unknown_option_lists_choices_and_suggests(host):
    prepare()
    msg = compose_error(host, "attention=sdpx")
    assert "unknown attention 'sdpx'" in msg and "did you mean 'sdpa'" in msg
    assert "naive (plugformer" in msg and "sdpa (plugformer" in msg


def test_every_yaml_option_is_registered_and_every_entry_selectable(host):
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    prepare()
    registries = host.registries
    for group in COMPONENT_GROUPS:
        for yaml in (CONF_DIR / group).glob("*.yaml"):
            assert yaml.stem in registries[group], f"conf/{group}/{yaml.name} names no registered {group}"
    with initialize_config_module(config_module="plugformer.conf", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for group in COMPONENT_GROUPS:
            options = set(loader.get_group_options(group))
            missing = set(registries[group].names()) - options
            assert not missing, f"{group}: registered but not selectable: {missing}"
            assert registries[group].names(), f"no built-in {group}"


def test_plugin_component_without_yaml_is_selectable_from_its_schema(host):
    host.registries.attention.register("windowed", "nowhere:Windowed", schema=WindowConfig)
    prepare()
    assert not (CONF_DIR / "attention" / "windowed.yaml").exists()
    cfg = compose(host, "attention=windowed", "attention.window=8")
    assert OmegaConf.to_container(cfg.attention) == {"name": "windowed", "window": 8}
    msg = compose_error(host, "attention=windowed", "attention.windw=3")
    assert "'attention.windw'" in msg and "did you mean 'window'" in msg and "name, window" in msg
    assert "bad value in 'attention.window=wide'" in compose_error(host, "attention=windowed", "attention.window=wide")


def edited(cfg, **values):
    """A copy of a composed config with dotted keys set (as an override would, minus the compose)."""
    cfg = cfg.copy()
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    return cfg


def test_validate_accepts_the_tiny_default(builtin_host, tiny_config):
    entries = validate_train(edited(tiny_config(), device="cpu"), builtin_host.registries)
    assert entries["attention"].name == "sdpa" and set(entries) == set(COMPONENT_GROUPS)


def test_validate_reports_every_problem_on_one_line(builtin_host, tiny_config):
    cfg = edited(tiny_config(), model__d_model=30, trainer__batch_size=0, device="tpu")
    with pytest.raises(ConfigError) as err:
        validate_train(cfg, builtin_host.registries)
    msg = str(err.value)
    assert "\n" not in msg
    assert "model.d_model=30 is not divisible by model.n_heads=4" in msg
    assert "trainer.batch_size=0 must be >= 1" in msg and "device 'tpu'" in msg


def test_validate_refuses_an_unavailable_component(registries, tiny_config):
    registries.attention.register("needs_x", "nowhere:X", available=lambda: (False, "needs X"))
    cfg = edited(tiny_config(), device="cpu")
    cfg.attention = {"name": "needs_x"}  # as `attention=needs_x` would select it
    with pytest.raises(ConfigError, match=r"attention 'needs_x' is unavailable here: needs X"):
        validate_train(cfg, registries)


def test_validate_refuses_cuda_without_cuda(builtin_host, tiny_config):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=r"device 'cuda' requested but torch sees no CUDA device"):
        validate_train(edited(tiny_config(), device="cuda"), builtin_host.registries)


def test_validate_names_both_sides_of_a_capability_mismatch(host):
    host.registries.position.register("alibi_like", "nowhere:Alibi",
                                      capabilities={"needs_attention": ["attention_bias"]})
    host.registries.attention.register("plain", "nowhere:Plain", capabilities={"attention_bias": False})
    prepare()
    cfg = compose(host, *TINY, "attention=plain", "position=alibi_like", "device=cpu")
    with pytest.raises(ConfigError) as err:
        validate_train(cfg, host.registries)
    msg = str(err.value)
    assert len(re.findall("needs attention with attention_bias", msg)) == 1
    assert "position 'alibi_like'" in msg and "attention 'plain' lacks" in msg and "naive, sdpa" in msg
    validate_train(edited(cfg, attention__name="sdpa"), host.registries)


def test_saved_config_carries_the_schema_version(tiny_config, tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OmegaConf.to_yaml(tiny_config(), resolve=True))
    saved = OmegaConf.load(path)
    assert saved.schema_version == SCHEMA_VERSION and saved.attention.name == "sdpa"
