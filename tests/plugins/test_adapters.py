"""Adapters: LoRA trains a small share of the parameters on a frozen base, saves in PEFT's own format,
loads back unmerged and merges into plain weights with the same outputs; QLoRA does the same on a
4-bit NF4 base on CPU; the trainer optimizes only adapter weights and resumes them exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from plugformer import ConfigError
from plugformer.build import build
from plugformer.checkpoint import attach_adapter, load_model_for_inference
from plugformer.interfaces import Adapter, Stage
from plugformer.model import build_model
from plugformer.training import Trainer

pytest.importorskip("peft", reason="peft is not installed (pip install 'plugformer[lora]')")

BASE = ("tokenizer=byte", "data.max_bytes=200000", "model.dropout=0.0")


def _model(cfg, registries, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg, registries, 259).eval()


def _tokens() -> torch.Tensor:
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))


def _train_a_little(model: torch.nn.Module, steps: int = 3) -> None:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    x = _tokens()
    for _ in range(steps):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()


def test_adapters_are_registered_as_adapt_stage_transforms(registries):
    for name in ("none", "lora", "qlora"):
        entry = registries.adapter.get(name)
        assert entry.availability() == (True, ""), name
        assert issubclass(entry.load(), Adapter) and entry.load().stage == Stage.ADAPT


def test_lora_freezes_the_base_and_trains_a_small_share(registries, tiny_config):
    cfg = tiny_config(*BASE)
    model = _model(cfg, registries)
    x = _tokens()
    before = model(x)
    lora = build(registries, "adapter", {"name": "lora", "r": 4})
    adapted = lora.apply(model)
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    share = sum(p.numel() for p in adapted.parameters() if p.requires_grad) / sum(
        p.numel() for p in adapted.parameters())
    assert share < 0.25  # tiny model; the benchmark measures the share at a realistic size
    torch.testing.assert_close(adapted(x), before)  # B starts at zero: the adapter changes nothing yet
    _train_a_little(adapted)
    assert not torch.allclose(adapted(x), before)


def test_target_patterns_choose_layers_and_a_pattern_matching_nothing_names_the_layers(registries, tiny_config):
    cfg = tiny_config(*BASE)
    adapted = build(registries, "adapter", {"name": "lora", "target_modules": ["*.attn.qkv"]}).apply(
        _model(cfg, registries))
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in adapted.named_modules() if n.endswith("lora_A")}
    assert wrapped == {"base_model.model.blocks.0.attn.qkv", "base_model.model.blocks.1.attn.qkv"}
    with pytest.raises(ConfigError, match=r"'\*\.attn\.query' matches no Linear layer .*blocks\.0\.attn\.qkv"):
        build(registries, "adapter", {"name": "lora", "target_modules": ["*.attn.query"]}).apply(
            _model(cfg, registries))


def test_bad_options_are_one_line_errors(registries):
    with pytest.raises(ConfigError, match="bias='some' is not one of: none, all, lora_only"):
        build(registries, "adapter", {"name": "lora", "bias": "some"})
    with pytest.raises(ConfigError, match="r=0 must be >= 1"):
        build(registries, "adapter", {"name": "lora", "r": 0})


@pytest.mark.parametrize("variant", [{"use_rslora": True}, {"use_dora": True}])
def test_rslora_and_dora_reach_peft(registries, tiny_config, variant):
    cfg = tiny_config(*BASE)
    adapted = build(registries, "adapter", {"name": "lora", "r": 4, **variant}).apply(_model(cfg, registries))
    peft_config = adapted.peft_config["default"]
    for key, value in variant.items():
        assert getattr(peft_config, key) is value
    if variant.get("use_dora"):
        assert any("lora_magnitude_vector" in n for n, p in adapted.named_parameters() if p.requires_grad)
    _train_a_little(adapted, steps=1)


def test_saved_adapter_is_peft_format_and_loads_and_merges_to_the_same_outputs(registries, tiny_config, tmp_path):
    cfg = tiny_config(*BASE)
    lora = build(registries, "adapter", {"name": "lora", "r": 4, "alpha": 8.0})
    adapted = lora.apply(_model(cfg, registries))
    _train_a_little(adapted)
    lora.save_artifacts(tmp_path)
    directory = tmp_path / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in directory.iterdir()}
    assert json.loads((directory / "adapter_config.json").read_text())["peft_type"] == "LORA"
    x = _tokens()
    expected = adapted(x).detach()
    reloaded = attach_adapter(_model(cfg, registries), directory, registries)  # same base seed
    torch.testing.assert_close(reloaded(x), expected)
    merged = registries.adapter.load("lora").merge(reloaded)
    assert not any("lora" in k or k.startswith("base_model") for k in merged.state_dict())
    torch.testing.assert_close(merged(x), expected, atol=1e-5, rtol=1e-5)


def test_qlora_trains_on_a_4bit_base_on_cpu_and_merges_dequantized(registries, tiny_config):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'plugformer[quant]')")
    cfg = tiny_config(*BASE)
    qlora = build(registries, "adapter", {"name": "qlora", "r": 4})
    adapted = qlora.apply(_model(cfg, registries))
    kinds = {type(m).__name__ for n, m in adapted.named_modules() if n.endswith("attn.qkv.base_layer")}
    assert kinds == {"Linear4bit"}
    x = _tokens()
    before = adapted(x).detach()
    _train_a_little(adapted)
    after = adapted(x).detach()
    assert not torch.allclose(after, before)
    merged = registries.adapter.load("qlora").merge(adapted)
    assert {type(m).__name__ for n, m in merged.named_modules() if n.endswith("attn.qkv")} == {"Linear"}
    torch.testing.assert_close(merged(x), after, atol=1e-4, rtol=1e-4)


def _trainer(host, tiny_config, run_dir: Path, cache: Path, *overrides: str) -> Trainer:
    cfg = tiny_config(*BASE, f"data.cache_dir={cache}", "trainer.callbacks=[metrics]", "trainer.log_every=1",
                      "trainer.eval_batches=1", *overrides)
    strategy = build(host.registries, "parallel", cfg.parallel)
    return Trainer(cfg, run_dir, host, strategy, strategy.setup("cpu"))


def _losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_trainer_optimizes_only_the_adapter_saves_peft_files_and_resumes_exactly(builtin_host, tiny_config,
                                                                                 tmp_path):
    cache = tmp_path / "cache"
    straight = _trainer(builtin_host, tiny_config, tmp_path / "a", cache, "adapter=lora", "trainer.max_steps=4",
                        "trainer.save_every=2")
    optimized = {id(p) for g in straight.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in straight.model.parameters() if p.requires_grad}
    assert 0 < straight.n_trainable < straight.n_params
    summary = straight.fit()
    assert summary["trainable_params"] == straight.n_trainable
    step = tmp_path / "a" / "checkpoints" / "step-4"
    assert (step / "adapter" / "adapter_config.json").is_file()
    assert (step / "adapter" / "adapter_model.safetensors").is_file()
    assert not list((tmp_path / "a" / "checkpoints").glob(".tmp-*"))
    _trainer(builtin_host, tiny_config, tmp_path / "b", cache, "adapter=lora", "trainer.max_steps=2").fit()
    _trainer(builtin_host, tiny_config, tmp_path / "b", cache, "adapter=lora", "trainer.max_steps=4",
             "resume=true").fit()
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert all(a[s] == b[s] for s in a), (a, b)


def test_generation_loader_reads_an_adapter_run_and_a_base_plus_adapter(builtin_host, tiny_config, tmp_path):
    cache = tmp_path / "cache"
    _trainer(builtin_host, tiny_config, tmp_path / "base", cache, "trainer.max_steps=1").fit()
    base_ckpt = tmp_path / "base" / "checkpoints" / "last"
    loaded = load_model_for_inference(base_ckpt, builtin_host.registries, device="cpu")
    adapted = build(builtin_host.registries, "adapter", {"name": "lora", "r": 2})
    model = adapted.apply(loaded.model)
    _train_a_little(model, steps=2)
    adapted.save_artifacts(tmp_path / "sft")
    x = _tokens()
    expected = model.eval()(x).detach()
    again = load_model_for_inference(base_ckpt, builtin_host.registries, adapter=tmp_path / "sft" / "adapter",
                                     device="cpu")
    torch.testing.assert_close(again.model(x), expected)
    with pytest.raises(ConfigError, match="is not an adapter directory"):
        load_model_for_inference(base_ckpt, builtin_host.registries, adapter=tmp_path, device="cpu")


def test_train_refuses_a_quantizer_whose_weights_cannot_train(builtin_host, tiny_config):
    from plugformer.config.validate import validate_train

    with pytest.raises(ConfigError, match="quantizer 'int8' makes weights that cannot be trained .*adapter=qlora"):
        validate_train(tiny_config(*BASE, "quantizer=int8"), builtin_host.registries)
    with pytest.raises(ConfigError, match="quantizer 'bf16' does not compose with adapter 'qlora'"):
        validate_train(tiny_config(*BASE, "quantizer=bf16", "adapter=qlora"), builtin_host.registries)
    validate_train(tiny_config(*BASE, "quantizer=bf16", "adapter=lora"), builtin_host.registries)


def test_a_qlora_checkpoint_loads_back_its_4bit_base_and_adapter(builtin_host, tiny_config, tmp_path):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed (pip install 'plugformer[quant]')")
    trainer = _trainer(builtin_host, tiny_config, tmp_path / "q", tmp_path / "cache", "adapter=qlora",
                       "adapter.r=2", "trainer.max_steps=2")
    trainer.fit()
    x = _tokens()
    expected = trainer.model.eval()(x).detach()
    loaded = load_model_for_inference(tmp_path / "q" / "checkpoints" / "last", builtin_host.registries, device="cpu")
    assert {type(m).__name__ for n, m in loaded.model.named_modules() if n.endswith("qkv.base_layer")} == {"Linear4bit"}
    torch.testing.assert_close(loaded.model(x), expected)
