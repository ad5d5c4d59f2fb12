"""Every numeric option declares its valid range, and composing a config refuses a value outside it, a key no
schema declares, and ``_target_``, each in one line naming the key and what is valid."""
# no `from __future__ import annotations`: the schemas below are read with typing.get_type_hints
import dataclasses
import math
from dataclasses import dataclass
from typing import List, Optional

import pytest

from plugformer import ConfigError, PlugformerError
from plugformer.cli.hydra_commands import compose_checked, prepare
from plugformer.config import bounded
from plugformer.config.ranges import Range, check_prompt_fits, field_range, is_numeric, unranged_numeric_fields
from plugformer.config.schema import COMPONENT_GROUPS, FinetuneConfig, GenerateConfig, TrainConfig
from plugformer.config.store import node_class

TOP_LEVEL = [TrainConfig, GenerateConfig, FinetuneConfig]


def nested_schemas(schema: type) -> list[type]:
    """``schema`` and every dataclass it nests (model, trainer, launcher, template)."""
    import typing

    found = [schema]
    for hint in typing.get_type_hints(schema).values():
        if dataclasses.is_dataclass(hint):
            found += nested_schemas(hint)
    return found


def one_line_error(host, config_name: str, *overrides: str) -> str:
    prepare()
    with pytest.raises(PlugformerError) as err:
        compose_checked(config_name, list(overrides), host)
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


# -- the rule itself --------------------------------------------------------------------------------
@pytest.mark.parametrize("bounds, inside, outside, words", [
    (dict(ge=1), [1, 7, 1.5], [0, -3, 0.99], ">= 1"),
    (dict(gt=0, le=1), [1e-9, 0.5, 1], [0, 1.01, -1], "in (0, 1]"),
    (dict(ge=0, lt=1), [0, 0.999], [1, 2.0, -0.1], "in [0, 1)"),
    (dict(le=0), [0, -0.8], [0.1], "<= 0"),
    ({}, [-1e30, 0, 3], [], "a finite number"),
])
def test_a_range_accepts_what_it_says_and_nothing_else(bounds, inside, outside, words):
    rng = Range(**bounds)
    assert rng.describe() == words
    assert all(rng.contains(v) for v in inside)
    assert not any(rng.contains(v) for v in outside)
    assert not any(rng.contains(v) for v in (math.nan, math.inf, -math.inf, True, "3"))  # never NaN, inf, bools


def test_a_range_problem_names_the_key_the_value_and_the_rule():
    assert Range(ge=1).problem("model.n_heads", 0) == "model.n_heads=0 must be >= 1"
    assert Range(ge=0, lt=1).problem("model.dropout", math.nan) == "model.dropout=nan must be in [0, 1)"
    assert Range(ge=0, lt=1).problem("optimizer.betas", [0.9, 1.5]) == "optimizer.betas[1]=1.5 must be in [0, 1)"
    assert Range(ge=1).problem("model.n_kv_heads", None) is None  # None means "not set"; the type says if allowed
    assert Range(ge=0).problem("x", 3) is None


def test_a_range_takes_one_bound_per_side():
    with pytest.raises(ValueError):
        Range(ge=0, gt=0)


def test_numeric_types_are_recognised_and_bools_are_not():
    assert all(is_numeric(t) for t in (int, float, Optional[int], List[float], List[Optional[float]]))
    assert not any(is_numeric(t) for t in (bool, str, Optional[str], List[str], Optional[bool]))


def test_a_schema_with_an_unranged_number_is_named_to_its_author():
    @dataclass
    class Careless:
        window: int = 8
        scale: Optional[float] = None
        ok: int = bounded(2, ge=1)
        flag: bool = False

    assert unranged_numeric_fields(Careless) == ["window", "scale"]
    assert field_range(dataclasses.fields(Careless)[2]) == Range(ge=1)


# -- every registered schema declares its ranges --------------------------------------------------
def test_every_numeric_field_of_every_registered_schema_declares_a_range(builtin_host):
    """Generated over the registries: a plugin (first-party here; the conformance kit does the same for any
    provider) that adds a numeric option without a range fails this test, naming it."""
    missing = {}
    for family in builtin_host.registries.families():
        for entry in builtin_host.registries[family]:
            if entry.load_schema() is not None or family in COMPONENT_GROUPS:
                missing.update({f"{family}/{entry.name}.{f}": 1 for f in unranged_numeric_fields(node_class(entry))})
    for schema in TOP_LEVEL:
        for nested in nested_schemas(schema):
            missing.update({f"{nested.__name__}.{f}": 1 for f in unranged_numeric_fields(nested)})
    assert not missing, f"numeric fields without a declared range: {', '.join(missing)}"


def test_every_default_lies_inside_its_own_range(builtin_host):
    schemas = [node_class(e) for f in builtin_host.registries.families() for e in builtin_host.registries[f]]
    schemas += [n for s in TOP_LEVEL for n in nested_schemas(s)]
    for schema in schemas:
        for f in dataclasses.fields(schema):
            rng = field_range(f)
            if rng is None:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            assert rng.problem(f.name, default) is None, f"{schema.__name__}: {rng.problem(f.name, default)}"


# -- compose time ---------------------------------------------------------------------------------
@pytest.mark.parametrize("override, expected", [
    ("model.n_heads=0", "model.n_heads=0 must be >= 1"),
    ("model.d_model=-8", "model.d_model=-8 must be >= 1"),
    ("model.dropout=2.0", "model.dropout=2 must be in [0, 1)"),
    ("model.dropout=nan", "model.dropout=nan must be in [0, 1)"),
    ("model.n_layers=0", "model.n_layers=0 must be >= 1"),
    ("trainer.grad_clip=-1", "trainer.grad_clip=-1 must be >= 0"),
    ("trainer.save_every=-1", "trainer.save_every=-1 must be >= 0"),
    ("trainer.keep_last=-1", "trainer.keep_last=-1 must be >= 0"),
    ("trainer.eval_batches=0", "trainer.eval_batches=0 must be >= 1"),
    ("objective.label_smoothing=1.5", "objective.label_smoothing=1.5 must be in [0, 1]"),
    ("tokenizer.vocab_size=10000000000", "tokenizer.vocab_size=10000000000 must be in [1, 1048576]"),
    ("optimizer.betas=[0.9,1.5]", "optimizer.betas[1]=1.5 must be in [0, 1)"),
    ("data.seq_len=0", "data.seq_len=0 must be >= 1"),
    ("+model.layer_pattern=[{attention:{window:0}}]", "model.layer_pattern[0].attention.window=0 must be >= 1"),
])
def test_out_of_range_values_are_refused_when_the_config_composes(host, override, expected):
    assert expected in one_line_error(host, "train", override)


def test_every_out_of_range_value_is_reported_at_once(host):
    msg = one_line_error(host, "validate", "model.n_heads=0", "trainer.keep_last=-1")
    assert "model.n_heads=0" in msg and "trainer.keep_last=-1" in msg


@pytest.mark.parametrize("override, expected", [
    ("top_p=0", "top_p=0 must be in (0, 1]"),
    ("top_p=1.5", "top_p=1.5 must be in (0, 1]"),
    ("top_k=-1", "top_k=-1 must be >= 0"),
    ("temperature=-0.5", "temperature=-0.5 must be >= 0"),
    ("temperature=nan", "temperature=nan must be >= 0"),
    ("max_new_tokens=0", "max_new_tokens=0 must be >= 1"),
    ("num_samples=0", "num_samples=0 must be >= 1"),
])
def test_generation_parameters_are_checked_before_the_checkpoint_loads(host, override, expected):
    assert expected in one_line_error(host, "generate", "checkpoint=/nowhere", override)


@pytest.mark.parametrize("config_name, override, key", [
    ("train", "+model.extra=1", "model.extra"),
    ("train", "+foo=bar", "foo"),
    ("train", "+trainer.max_stepz=3", "trainer.max_stepz"),
    ("generate", "+top_q=0.5", "top_q"),
    ("finetune", "+template.extra=x", "template.extra"),
])
def test_keys_added_with_plus_are_refused_everywhere(host, config_name, override, key):
    required = ["checkpoint=/nowhere"] if config_name != "train" else []
    msg = one_line_error(host, config_name, *required, override)
    assert f"unknown config key '{key}'" in msg and "keys of" in msg


@pytest.mark.parametrize("override, where", [
    ("+_target_=os.system", "_target_"),
    ("+model._target_=os.system", "model._target_"),
    ("+attention._target_=os.system", "attention._target_"),
    ("+model.layer_pattern=[{mlp:{_target_:os.system}}]", "model.layer_pattern[0].mlp._target_"),
    ("+model.layer_overrides={0:{attention:{_target_:os.system}}}", "model.layer_overrides.0.attention._target_"),
])
def test_target_is_refused_anywhere(host, override, where):
    msg = one_line_error(host, "train", override)
    assert f"'{where}' is not allowed" in msg and "registry name" in msg


def test_a_plugin_option_out_of_range_is_refused_for_a_plugin_without_yaml(host):
    @dataclass
    class ScaledConfig:
        temperature: float = bounded(1.0, gt=0)

    host.registries.attention.register("scaled_for_ranges", "nowhere:Scaled", schema=ScaledConfig)
    msg = one_line_error(host, "train", "attention=scaled_for_ranges", "attention.temperature=0")
    assert "attention.temperature=0 must be > 0" in msg


def test_a_warmup_longer_than_the_run_is_named_in_one_warning_line(host):
    from plugformer.config.validate import config_warnings

    prepare()
    (line,) = config_warnings(compose_checked("train", ["scheduler.warmup_steps=500", "trainer.max_steps=100"], host))
    assert line.startswith("scheduler.warmup_steps=500 is longer than the run (trainer.max_steps=100)")
    assert config_warnings(compose_checked("train", ["scheduler.warmup_steps=50", "trainer.max_steps=100"], host)) == []


def test_a_learning_rate_changed_on_resume_is_named_as_ignored():
    from omegaconf import OmegaConf

    from plugformer.config.validate import resume_warnings

    saved = OmegaConf.create({"optimizer": {"name": "adamw", "lr": 0.001}})
    (line,) = resume_warnings(saved, OmegaConf.create({"optimizer": {"name": "adamw", "lr": 0.01}}))
    assert "optimizer.lr=0.01 is ignored on resume=true" in line and "optimizer.lr=0.001" in line
    assert resume_warnings(saved, saved) == []


# -- prompts that do not fit ----------------------------------------------------------------------
def test_a_prompt_that_fits_passes():
    check_prompt_fits(prompt_tokens=10, max_new_tokens=6, context=16)


@pytest.mark.parametrize("prompt, new, context, words", [
    (20, 8, 16, ["the prompt is 20 tokens", "max_new_tokens=8", "context of 16 tokens", "room for 8"]),
    (1, 16, 16, ["max_new_tokens=16", "context of 16 tokens", "at most 15"]),
    (1, 0, 16, ["max_new_tokens=0 must be >= 1"]),
])
def test_a_prompt_that_does_not_fit_is_refused_with_both_numbers(prompt, new, context, words):
    with pytest.raises(ConfigError) as err:
        check_prompt_fits(prompt, new, context)
    assert all(w in str(err.value) for w in words), str(err.value)
