"""Several LoRA adapters on one base model: a server loads two fine-tunes side by side with
``AdapterSet`` and one forward batch serves rows for adapter a, adapter b and the plain base at once;
every row gets exactly the logits it would get from a model carrying only its own adapter (or none),
in a full forward pass and in KV-cached decoding. Bad names and bad directories are one-line errors
that leave the loaded model as it was."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from plugformer import ConfigError, PlugformerError
from plugformer.build import build
from plugformer.checkpoint import attach_adapter
from plugformer.engine.adapters import AdapterSet
from plugformer.model import build_model

pytest.importorskip("peft", reason="peft is not installed (pip install 'plugformer[lora]')")

BASE = ("tokenizer=byte", "data.max_bytes=200000", "model.dropout=0.0")
ROWS = ["a", "b", None, "a"]
ATOL = 1e-5


def _base(cfg, registries) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg, registries, 259).eval()


def _saved_adapter(cfg, registries, out: Path, seed: int, entry: str = "lora", **options) -> Path:
    """An adapter trained-looking enough to matter (random, non-zero ``lora_B``), saved the usual way."""
    adapter = build(registries, "adapter", {"name": entry, "r": 4, **options})
    model = adapter.apply(_base(cfg, registries))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    adapter.save_artifacts(out)
    return out / "adapter"


def _tokens(rows: int = len(ROWS), length: int = 10) -> torch.Tensor:
    return torch.randint(0, 256, (rows, length), generator=torch.Generator().manual_seed(7))


@pytest.fixture
def setup(registries, tiny_config, tmp_path):
    """(config, {name: adapter directory}, an AdapterSet holding both on one base)."""
    cfg = tiny_config(*BASE)
    dirs = {"a": _saved_adapter(cfg, registries, tmp_path / "a", seed=1),
            "b": _saved_adapter(cfg, registries, tmp_path / "b", seed=2, r=2,
                                target_modules=["*.attn.qkv", "*.mlp.proj_in"])}
    adapters = AdapterSet(_base(cfg, registries), registries)
    for name, directory in dirs.items():
        adapters.add(name, directory)
    return cfg, dirs, adapters


def _alone(cfg, registries, directory: Path | None) -> torch.nn.Module:
    """The reference: a fresh base with only this adapter attached the existing way (or none)."""
    base = _base(cfg, registries)
    return base if directory is None else attach_adapter(base, directory, registries).eval()


@torch.no_grad()
def test_each_row_of_a_mixed_batch_gets_the_logits_of_its_own_adapter_alone(registries, setup):
    cfg, dirs, adapters = setup
    assert adapters.names() == ["a", "b"]
    tokens = _tokens()
    with adapters.route(adapters.model, ROWS):
        mixed = adapters.model(tokens)
    expected = {name: _alone(cfg, registries, dirs.get(name)) for name in ("a", "b", None)}
    for i, name in enumerate(ROWS):
        torch.testing.assert_close(mixed[i:i + 1], expected[name](tokens[i:i + 1]), atol=ATOL, rtol=0)
    row = tokens[:1]  # the adapters really differ from each other and from the base
    assert not torch.allclose(expected["a"](row), expected[None](row), atol=1e-3)
    assert not torch.allclose(expected["b"](row), expected[None](row), atol=1e-3)
    assert not torch.allclose(expected["a"](row), expected["b"](row), atol=1e-3)


@torch.no_grad()
def test_outside_a_route_and_for_an_all_base_batch_the_model_is_the_plain_base(registries, setup):
    cfg, _, adapters = setup
    tokens = _tokens()
    plain = _base(cfg, registries)(tokens)
    torch.testing.assert_close(adapters.model(tokens), plain, atol=ATOL, rtol=0)
    with adapters.route(adapters.model, [None] * len(ROWS)):
        torch.testing.assert_close(adapters.model(tokens), plain, atol=ATOL, rtol=0)
    with adapters.route(adapters.model, ROWS):
        adapters.model(tokens)
    torch.testing.assert_close(adapters.model(tokens), plain, atol=ATOL, rtol=0)  # the route left nothing behind


@torch.no_grad()
def test_kv_cached_decoding_routes_every_step(registries, setup):
    cfg, dirs, adapters = setup
    tokens = _tokens(length=9)
    model, prefill = adapters.model, 5
    cache = model.new_cache(len(ROWS), tokens.shape[1])
    inner = model.get_base_model()  # the wrapped base module routes too: the engine may hold either
    steps = []
    with adapters.route(model, ROWS):
        steps.append(model(tokens[:, :prefill], cache=cache))
    for t in range(prefill, tokens.shape[1]):
        with adapters.route(inner, ROWS):
            steps.append(inner(tokens[:, t:t + 1], cache=cache))
    decoded = torch.cat(steps, dim=1)
    for i, name in enumerate(ROWS):
        full = _alone(cfg, registries, dirs.get(name))(tokens[i:i + 1])
        torch.testing.assert_close(decoded[i:i + 1], full, atol=ATOL, rtol=0)


def test_unknown_and_duplicate_names_are_refused_in_one_line(setup, tmp_path):
    _, dirs, adapters = setup
    with pytest.raises(ConfigError, match=r"^unknown adapter 'c'; loaded adapters: a, b$"):
        adapters.route(adapters.model, ["a", "c", None, "a"])
    adapters.check(["b", "a"])  # what a request's adapter= is checked with when it arrives
    with pytest.raises(ConfigError, match=r"^unknown adapter 'sql'; loaded adapters: a, b$"):
        adapters.check(["sql"])
    with pytest.raises(ConfigError, match=r"adapter 'a' is already loaded \(from .*\); loaded adapters: a, b"):
        adapters.add("a", dirs["b"])
    with pytest.raises(ConfigError, match="adapter name '' must be a non-empty string"):
        adapters.add("", dirs["b"])
    with pytest.raises(ConfigError, match="adapter name 'x.y' contains '.'"):
        adapters.add("x.y", dirs["b"])
    with pytest.raises(ConfigError, match="adapter name '__base__' is reserved"):
        adapters.add("__base__", dirs["b"])
    with pytest.raises(ConfigError, match="is not an adapter directory"):
        adapters.add("c", tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        adapters.add("c", tmp_path / "missing")
    assert adapters.names() == ["a", "b"]


@torch.no_grad()
def test_a_forward_pass_of_another_batch_size_inside_a_route_is_an_error(registries, setup):
    cfg, _, adapters = setup
    tokens = _tokens(rows=2)
    with pytest.raises(ConfigError, match="batch size 2 inside a routing for 4 rows"):
        with adapters.route(adapters.model, ROWS):
            adapters.model(tokens)
    torch.testing.assert_close(adapters.model(tokens), _base(cfg, registries)(tokens))  # the route ended with it


def test_an_empty_set_routes_nothing_and_names_no_adapters(registries, tiny_config):
    adapters = AdapterSet(_base(tiny_config(*BASE), registries), registries)
    with adapters.route(adapters.model, [None, None]):
        pass
    with pytest.raises(ConfigError, match="unknown adapter 'a'; loaded adapters: none"):
        adapters.route(adapters.model, ["a"])


@torch.no_grad()
def test_an_adapter_that_does_not_fit_leaves_the_model_as_it_was(registries, tiny_config, tmp_path, setup):
    cfg, dirs, adapters = setup
    wider = _saved_adapter(tiny_config(*BASE, "model.d_model=48"), registries, tmp_path / "wide", seed=3)
    tokens = _tokens()
    with adapters.route(adapters.model, ROWS):
        before = adapters.model(tokens)
    with pytest.raises(ConfigError, match="does not fit this model"):
        adapters.add("wide", wider)
    assert adapters.names() == ["a", "b"]
    with adapters.route(adapters.model, ROWS):
        torch.testing.assert_close(adapters.model(tokens), before)
    torch.testing.assert_close(adapters.model(tokens), _base(cfg, registries)(tokens))  # unrouted: still the base
    fresh = AdapterSet(_base(cfg, registries), registries)  # a failed first load leaves the plain base
    with pytest.raises(ConfigError, match="does not fit this model"):
        fresh.add("wide", wider)
    assert fresh.names() == []
    assert not any("lora" in name for name, _ in fresh.model.named_modules())
    torch.testing.assert_close(fresh.model(tokens), _base(cfg, registries)(tokens))
    fresh.add("a", dirs["a"])  # and it still takes a fitting adapter
    assert fresh.names() == ["a"]


def test_dora_and_single_adapter_models_are_refused(registries, tiny_config, tmp_path):
    cfg = tiny_config(*BASE)
    dora = _saved_adapter(cfg, registries, tmp_path / "dora", seed=4, use_dora=True)
    with pytest.raises(ConfigError, match="uses DoRA, which peft cannot route per batch row"):
        AdapterSet(_base(cfg, registries), registries).add("d", dora)
    plain = _saved_adapter(cfg, registries, tmp_path / "plain", seed=5)
    attached = attach_adapter(_base(cfg, registries), plain, registries)
    with pytest.raises(ConfigError, match="already carries an adapter applied the single-adapter way"):
        AdapterSet(attached, registries).add("p", plain)


def test_adapters_from_another_entry_or_without_multi_adapter_are_refused(registries, tiny_config, tmp_path):
    cfg = tiny_config(*BASE)
    lora = _saved_adapter(cfg, registries, tmp_path / "lora", seed=1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "adapter_model.safetensors").write_bytes((lora / "adapter_model.safetensors").read_bytes())
    (other / "adapter_config.json").write_text((lora / "adapter_config.json").read_text())
    (other / "plugformer_adapter.json").write_text(json.dumps({"adapter": "qlora"}))
    adapters = AdapterSet(_base(cfg, registries), registries)
    adapters.add("a", lora)
    with pytest.raises(ConfigError, match="needs adapter entry 'qlora', but the adapters already loaded \\(a\\) use "
                                          "'lora'"):
        adapters.add("q", other)
    (other / "plugformer_adapter.json").write_text(json.dumps({"adapter": "none"}))
    with pytest.raises(ConfigError, match="adapter entry 'none' needed by .* cannot load adapters side by side"):
        AdapterSet(_base(cfg, registries), registries).add("n", other)


def test_an_adapter_class_without_side_by_side_support_refuses_by_default(registries, tiny_config, tmp_path):
    none = registries.adapter.load("none")
    with pytest.raises(PlugformerError, match="adapter 'NoAdapter' cannot be loaded side by side"):
        none.load_named(torch.nn.Linear(2, 2), tmp_path, "x")
    with pytest.raises(PlugformerError, match="cannot route batch rows"):
        none.route_rows(torch.nn.Linear(2, 2), ["x"])


@torch.no_grad()
def test_saved_qlora_adapters_route_on_the_full_precision_base(registries, tiny_config, tmp_path):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'plugformer[quant]')")
    cfg = tiny_config(*BASE)
    dirs = {n: _saved_adapter(cfg, registries, tmp_path / n, seed=s, entry="qlora") for n, s in (("a", 1), ("b", 2))}
    adapters = AdapterSet(_base(cfg, registries), registries)
    for name, directory in dirs.items():
        adapters.add(name, directory)
    tokens = _tokens()
    with adapters.route(adapters.model, ROWS):
        mixed = adapters.model(tokens)
    for i, name in enumerate(ROWS):
        torch.testing.assert_close(mixed[i:i + 1], _alone(cfg, registries, dirs.get(name))(tokens[i:i + 1]),
                                   atol=ATOL, rtol=0)


def test_the_engine_serves_requests_for_different_adapters_in_one_batch(registries, tiny_config, tmp_path):
    """Engine.add_adapter: each request names its adapter; every request gets what its adapter alone gives."""
    from plugformer.engine import Engine, SamplingParams
    from plugformer.generation import Sampling, generate
    from plugformer_text.byte_tokenizer import ByteTokenizer

    cfg = tiny_config(*BASE, "position=rope", "model.max_seq_len=48")
    dirs = {"a": _saved_adapter(cfg, registries, tmp_path / "a", seed=1),
            "b": _saved_adapter(cfg, registries, tmp_path / "b", seed=2)}
    engine = Engine(_base(cfg, registries), ByteTokenizer(None), registries=registries, block_size=4)
    for name, directory in dirs.items():
        engine.add_adapter(name, directory)
    assert engine.adapters() == ["a", "b"]
    prompts = [b"def main(", b"import os", b"def main(", b"class X:"]
    names = ["a", "b", None, "b"]
    outs = engine.generate([list(p) for p in prompts],
                           [SamplingParams(max_tokens=10, temperature=0, ignore_eos=True, adapter=n) for n in names])
    got = {}
    for prompt, name, out in zip(prompts, names, outs):
        model = _base(cfg, registries)
        if name is not None:
            model = attach_adapter(model, dirs[name], registries).eval()
        alone = generate(model, [list(prompt)], Sampling(max_new_tokens=10, temperature=0), eos_id=None,
                         use_cache=False)[0].tokens
        assert out.outputs[0].token_ids == alone, (prompt, name)
        got[(prompt, name)] = alone
    assert got[(b"def main(", "a")] != got[(b"def main(", None)]  # the adapter really changes the output
    with pytest.raises(ConfigError, match="'c'.*loaded adapters: a, b"):
        engine.add_request("x", SamplingParams(adapter="c"))
