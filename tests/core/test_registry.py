"""Registries: lazy entries, who provided what, clashes, and errors that tell the user what exists."""
from __future__ import annotations

import sys
from dataclasses import dataclass

import pytest

from plugformer import DuplicateComponentError, Registries, UnknownComponentError
from plugformer.registry import LOCAL_PROVIDER


def test_lazy_entry_is_not_imported_until_loaded(module_file):
    mod = module_file("fake_lazy_backend", """
        from dataclasses import dataclass
        class Backend: pass
        @dataclass
        class BackendConfig:
            width: int = 3
    """)
    regs = Registries()
    entry = regs.norm.register("lazy", f"{mod}:Backend", schema=f"{mod}:BackendConfig")
    assert mod not in sys.modules
    assert regs.norm.names() == ["lazy"] and "lazy" in regs.norm
    assert mod not in sys.modules  # listing does not import either

    cls = regs.norm.load("lazy")
    assert cls.__name__ == "Backend" and mod in sys.modules
    assert entry.load_schema()().width == 3


def test_dotted_attribute_targets_resolve(module_file):
    mod = module_file("fake_dotted_target", """
        class Outer:
            class Inner: pass
    """)
    regs = Registries()
    regs.norm.register("inner", f"{mod}:Outer.Inner")
    assert regs.norm.load("inner").__qualname__ == "Outer.Inner"


def test_provider_and_version_are_recorded_inside_providing_only():
    regs = Registries()
    with regs.providing("acme-attention", "2.1", "acme"):
        inside = regs.attention.register("flash", "acme:Flash")
    outside = regs.attention.register("mine", "here:Mine")
    assert (inside.provider, inside.version, inside.plugin) == ("acme-attention", "2.1", "acme")
    assert inside.provided_by == "acme-attention 2.1"
    assert (outside.provider, outside.version) == LOCAL_PROVIDER


def test_providing_restores_previous_provider_after_an_error():
    regs = Registries()
    with pytest.raises(RuntimeError), regs.providing("acme", "1.0", "acme"):
        raise RuntimeError("register hook failed")
    assert regs.mlp.register("swiglu", "x:Y").provider == LOCAL_PROVIDER[0]


def test_duplicate_name_with_other_target_names_both_providers():
    regs = Registries()
    with regs.providing("acme-a", "1.0", "a"):
        regs.attention.register("flash", "acme_a:Flash")
    with pytest.raises(DuplicateComponentError) as err, regs.providing("acme-b", "2.0", "b"):
        regs.attention.register("flash", "acme_b:Flash")
    msg = str(err.value)
    assert "acme-a 1.0" in msg and "acme-b 2.0" in msg and "flash" in msg and "override=True" in msg
    assert regs.attention.get("flash").provider == "acme-a"


def test_registering_the_same_target_twice_is_a_no_op():
    regs = Registries()
    first = regs.attention.register("flash", "acme:Flash", description="first")
    again = regs.attention.register("flash", "acme:Flash", description="second")
    assert again is first and len(regs.attention) == 1


def test_override_replaces_on_purpose_whatever_the_load_order():
    regs = Registries()
    regs.attention.register("flash", "acme:Flash")
    regs.attention.register("flash", "mine:BetterFlash", override=True)
    assert regs.attention.get("flash").target == "mine:BetterFlash"
    regs.attention.register("flash", "other:Flash")  # a plugin loading later does not undo it
    assert regs.attention.get("flash").target == "mine:BetterFlash"


def test_loading_checks_the_family_interface(module_file):
    mod = module_file("fake_wrong_interface", """
        class NotAnAttention: pass
        not_callable = 3
    """)
    regs = Registries()
    regs.attention.register("wrong", f"{mod}:NotAnAttention")
    with pytest.raises(TypeError, match=r"attention 'wrong' .* must be a subclass of .*Attention"):
        regs.attention.load("wrong")
    regs.norm.register("three", f"{mod}:not_callable")
    with pytest.raises(TypeError, match=r"norm 'three' .* is not callable"):
        regs.norm.load("three")
    regs.attention.register("sdpa", "plugformer_attention.sdpa:SdpaAttention")
    assert regs.attention.load("sdpa").__name__ == "SdpaAttention"


def test_unknown_name_lists_choices_with_providers_suggests_and_shows_failures():
    regs = Registries()
    with regs.providing("plugformer", "0.1.0", "attention"):
        regs.attention.register("sdpa", "x:Sdpa")
        regs.attention.register("naive", "x:Naive")
    regs.failures["flashplug"] = "ModuleNotFoundError: No module named 'flash_attn'"
    with pytest.raises(UnknownComponentError) as err:
        regs.attention.get("sdpx")
    msg = str(err.value)
    assert "\n" not in msg
    assert "'sdpx'" in msg and "did you mean 'sdpa'" in msg
    assert "naive (plugformer 0.1.0)" in msg and "sdpa (plugformer 0.1.0)" in msg
    assert "flashplug (ModuleNotFoundError: No module named 'flash_attn')" in msg
    assert isinstance(err.value, KeyError) and (err.value.family, err.value.name) == ("attention", "sdpx")


def test_unknown_name_in_an_empty_family_says_none():
    with pytest.raises(UnknownComponentError, match="choices: none"):
        Registries().server.get("http")


def test_unknown_name_message_separates_its_clauses():
    regs = Registries()
    regs.attention.register("sdpa", "x:Sdpa")
    with pytest.raises(UnknownComponentError) as err:
        regs.attention.get("zzzzzz")
    assert "unknown attention 'zzzzzz';" in str(err.value)


def test_unavailable_component_reports_reason_and_broken_check_is_caught(module_file):
    mod = module_file("fake_availability", """
        def needs_x():
            return False, "needs X"
    """)
    regs = Registries()
    lazy = regs.attention.register("lazy", "x:A", available=f"{mod}:needs_x")
    fine = regs.attention.register("fine", "x:B", available=lambda: (True, ""))
    unchecked = regs.attention.register("plain", "x:C")

    def boom():
        raise RuntimeError("driver exploded")

    broken = regs.attention.register("broken", "x:D", available=boom)
    assert lazy.availability() == (False, "needs X")
    assert fine.availability() == (True, "") and unchecked.availability() == (True, "")
    ok, reason = broken.availability()
    assert not ok and "RuntimeError" in reason and "driver exploded" in reason


def test_schema_that_is_not_a_dataclass_is_a_type_error():
    class NotADataclass:
        width: int = 3

    @dataclass
    class Fine:
        width: int = 3

    regs = Registries()
    bad = regs.attention.register("bad", "x:A", schema=NotADataclass)
    with pytest.raises(TypeError, match="attention 'bad'.*not a dataclass"):
        bad.load_schema()
    assert regs.attention.register("ok", "x:B", schema=Fine).load_schema() is Fine
    assert regs.attention.register("none", "x:C").load_schema() is None


def test_every_family_is_a_registry_reachable_by_attribute_and_key():
    regs = Registries()
    for family in regs.families():
        assert regs[family] is getattr(regs, family) and regs[family].family == family
    with pytest.raises(AttributeError):
        regs.no_such_family  # noqa: B018


# --- a saved config naming components this install lacks: where they came from, how to get them -------------

EXAMPLE = {"name": "example", "dist": "plugformer-example-plugin", "version": "0.2.0", "value": "plugformer_example",
           "status": "loaded", "error": "", "api": "1.0",
           "components": {"attention": ["chunked", "gemma_softcap"], "position": ["t5_bias"]}}


def test_manifest_records_the_components_each_plugin_registered(host):
    manifest = {m["name"]: m for m in host.manifest()}
    assert "sdpa" in manifest["attention"]["components"]["attention"]
    assert manifest["attention"]["components"] == host.registries.components_of("attention")
    assert set(manifest["layers"]["components"]) == {"norm", "mlp"}


def test_origin_names_the_package_that_provided_it_and_how_to_install_it():
    from plugformer.errors import component_origin

    assert component_origin("attention", "chunked", [EXAMPLE], installed=lambda dist: None) == (
        "it was provided by plugformer-example-plugin 0.2.0 (see plugins.json); "
        "install it: pip install plugformer-example-plugin==0.2.0")
    other = component_origin("attention", "chunked", [EXAMPLE], installed=lambda dist: "0.1.0")
    assert "plugformer-example-plugin 0.1.0 is installed here; install that version: pip install " \
           "plugformer-example-plugin==0.2.0" in other
    same = component_origin("position", "t5_bias", [EXAMPLE], installed=lambda dist: "0.2.0")
    assert "its plugin 'example' did not register it here (see `plugformer plugins`)" in same
    assert component_origin("attention", "flash", [EXAMPLE], installed=lambda dist: None) == ""


def test_origin_from_an_older_manifest_names_the_packages_not_installed_here():
    from plugformer.errors import component_origin

    old = [{k: v for k, v in EXAMPLE.items() if k != "components"},
           {"name": "attention", "dist": "plugformer", "version": "0.1.0", "status": "loaded"}]
    hint = component_origin("attention", "chunked", old, installed=lambda d: "0.1.0" if d == "plugformer" else None)
    assert hint == ("it may come from a plugin the artifact was written with that is not installed here (see "
                    "plugins.json): plugformer-example-plugin 0.2.0 (pip install plugformer-example-plugin==0.2.0)")


def test_require_reports_every_missing_component_at_once_with_its_origin():
    from plugformer.errors import UnknownComponentsError

    regs = Registries()
    regs.attention.register("sdpa", "x:Sdpa")
    regs.require([("attention", "sdpa")], [EXAMPLE])  # registered: nothing to say
    with pytest.raises(UnknownComponentsError) as err:
        regs.require([("attention", "chunked"), ("attention", "sdpa"), ("position", "t5_bias"),
                      ("attention", "chunked")], [EXAMPLE])
    msg = str(err.value)
    assert "\n" not in msg and msg.count("unknown attention 'chunked'") == 1 and "unknown position 't5_bias'" in msg
    assert "it was provided by plugformer-example-plugin 0.2.0 (see plugins.json); install it: " \
           "pip install plugformer-example-plugin==0.2.0" in msg
    assert isinstance(err.value, UnknownComponentError) and [e.name for e in err.value.errors] == ["chunked", "t5_bias"]


def test_loading_a_checkpoint_whose_plugin_is_gone_says_which_package_to_install(builtin_host, tiny_config, tmp_path,
                                                                                  monkeypatch):
    import json

    from omegaconf import OmegaConf

    import plugformer.errors
    from plugformer.checkpoint import load_model_for_inference

    monkeypatch.setattr(plugformer.errors, "_installed_version", lambda dist: None)

    cfg = OmegaConf.to_container(tiny_config("model.layer_overrides={1: {norm: {name: fancy_norm}}}"), resolve=True)
    cfg["attention"] = {"name": "chunked", "chunk": 16}
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (tmp_path / "model.safetensors").write_bytes(b"")  # never read: the check comes first
    (tmp_path / "plugins.json").write_text(json.dumps([*builtin_host.manifest(), EXAMPLE]))
    with pytest.raises(UnknownComponentError) as err:
        load_model_for_inference(tmp_path, builtin_host.registries, device="cpu")
    msg = str(err.value)
    assert msg.startswith("unknown attention 'chunked'; it was provided by plugformer-example-plugin 0.2.0 "
                          "(see plugins.json); install it: pip install plugformer-example-plugin==0.2.0; "
                          "registered attention choices: ")
    assert "unknown norm 'fancy_norm'" in msg  # a per-layer name is checked too


# --- validate: every unknown name at once ---------------------------------------------------------------------

def test_validate_reports_every_unknown_name_of_a_composed_config_in_one_line(builtin_host, tiny_config):
    from plugformer.config.validate import validate_train
    from plugformer.errors import UnknownComponentsError

    cfg = tiny_config("trainer.callbacks=[progress,nope]", "model.layer_overrides={0: {mlp: {name: wide}}}")
    with pytest.raises(UnknownComponentsError) as err:
        validate_train(cfg, builtin_host.registries)
    msg = str(err.value)
    assert "\n" not in msg and "unknown callback 'nope'" in msg and "unknown mlp 'wide'" in msg
    assert [(e.family, e.name) for e in err.value.errors] == [("callback", "nope"), ("mlp", "wide")]


def test_validate_reports_unknown_names_beside_the_other_problems(builtin_host, tiny_config):
    from plugformer.config.validate import validate_train
    from plugformer.errors import ConfigError

    cfg = tiny_config("trainer.callbacks=[nope]", "model.d_model=65")
    with pytest.raises(ConfigError, match=r"^invalid config: unknown callback 'nope'.*; model.d_model=65 is not "
                                          r"divisible by model.n_heads"):
        validate_train(cfg, builtin_host.registries)


def test_composing_several_unknown_group_choices_names_them_all(tiny_config):
    from plugformer.errors import PlugformerError

    with pytest.raises(PlugformerError) as err:
        tiny_config("attention=foo", "position=bar", "norm=baz", "mlp=gelu")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("unknown attention 'foo'; ")
    assert "; unknown position 'bar'; " in msg and "; unknown norm 'baz'; " in msg and "'gelu'" not in msg


def test_origin_survives_a_malformed_or_local_manifest():
    from plugformer.errors import component_origin

    local = {"name": "scratch", "dist": "<local>", "version": "", "components": {"attention": ["mine"]}}
    assert component_origin("attention", "mine", [local, "junk", {"components": ["x"]}], installed=lambda d: None) == \
        "it was registered by plugin 'scratch' (see plugins.json), which is not part of a package"
    assert component_origin("attention", "x", ["junk", {"components": ["x"]}], installed=lambda d: None) == ""
