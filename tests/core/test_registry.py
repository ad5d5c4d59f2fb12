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


def test_remove_plugin_drops_only_that_plugins_entries():
    regs = Registries()
    with regs.providing("d", "1", "half"):
        regs.attention.register("a", "x:A")
        regs.norm.register("b", "x:B")
    with regs.providing("d", "1", "other"):
        regs.attention.register("c", "x:C")
    regs.remove_plugin("half")
    assert regs.attention.names() == ["c"] and len(regs.norm) == 0


def test_every_family_is_a_registry_reachable_by_attribute_and_key():
    regs = Registries()
    for family in regs.families():
        assert regs[family] is getattr(regs, family) and regs[family].family == family
    with pytest.raises(AttributeError):
        regs.no_such_family  # noqa: B018
