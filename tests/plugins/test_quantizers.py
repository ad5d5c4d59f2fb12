"""Quantizers: each replaces the Linear weights by a smaller representation whose outputs stay close to
fp32, writes plain safetensors tensors plus metadata, and rebuilds exactly the same quantized model from
them on a freshly built one (no pickle, no original weights needed)."""
from __future__ import annotations

import pytest
import torch
from plugformer import ConfigError
from plugformer.build import build
from plugformer.checkpoint import tensor_bytes
from plugformer.interfaces import Quantizer, Stage
from plugformer.model import build_model
from safetensors.torch import load_file, save_file

BASE = ("tokenizer=byte", "data.max_bytes=200000", "model.dropout=0.0", "model.d_model=64", "model.n_heads=2")
LIBRARY = {"int8": "torchao", "int8_dynamic": "torchao", "nf4": "bitsandbytes"}
# worst relative error of the logits allowed per format on a random tiny model
TOLERANCE = {"bf16": 0.02, "fp16": 0.005, "int8": 0.03, "int8_dynamic": 0.06, "nf4": 0.25}


def _model(cfg, registries, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg, registries, 259).eval()


def _tokens() -> torch.Tensor:
    return torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(3))


def _linear_weight_bytes(model: torch.nn.Module) -> int:
    return sum(m.weight.numel() * 4 for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               and n != "lm_head")


def test_every_quantizer_declares_devices_training_and_what_it_composes_with(registries):
    for entry in registries.quantizer:
        assert issubclass(entry.load(), Quantizer) and entry.load().stage == Stage.QUANTIZE
        assert {"devices", "training", "adapters"} <= set(entry.capabilities), entry.name
        if entry.name in LIBRARY:
            assert entry.availability()[0] == (pytest.importorskip(LIBRARY[entry.name]) is not None)


@pytest.mark.parametrize("name", ["bf16", "fp16", "int8", "int8_dynamic", "nf4"])
def test_quantized_model_is_close_to_fp32_and_rebuilds_exactly_from_safetensors(registries, tiny_config,
                                                                                tmp_path, name):
    if name in LIBRARY:
        pytest.importorskip(LIBRARY[name])
    cfg = tiny_config(*BASE)
    x = _tokens()
    reference = _model(cfg, registries)(x).detach()
    quantizer = build(registries, "quantizer", {"name": name})
    model = quantizer.apply(_model(cfg, registries))
    with torch.no_grad():
        out = model(x).float()
    error = ((out - reference).norm() / reference.norm()).item()
    assert error < TOLERANCE[name], error
    tensors, metadata = quantizer.quantized_state(model)
    assert all(type(t) is torch.Tensor for t in tensors.values())
    save_file(tensors, str(tmp_path / "q.safetensors"), metadata=metadata)  # no pickle: plain tensors only
    fresh = build(registries, "quantizer", {"name": name}).load_quantized(
        _model(cfg, registries, seed=1), load_file(str(tmp_path / "q.safetensors")), metadata)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x).float(), out, atol=0, rtol=0)
    assert fresh.lm_head.weight is fresh.tok_emb.weight  # the tied head stays tied (and full precision)


def test_int8_and_nf4_shrink_the_linear_weights(registries, tiny_config):
    pytest.importorskip("torchao")
    pytest.importorskip("bitsandbytes")
    cfg = tiny_config(*BASE, "model.d_model=128", "model.n_heads=2")
    fp32 = _model(cfg, registries)
    linear_fp32 = _linear_weight_bytes(fp32)
    embeddings = fp32.tok_emb.weight.numel() * 4
    others = tensor_bytes(dict(fp32.named_parameters())) - linear_fp32 - embeddings  # biases, norms
    for name, limit in (("int8", 0.30), ("nf4", 0.18)):
        q = build(registries, "quantizer", {"name": name})
        tensors, _ = q.quantized_state(q.apply(_model(cfg, registries)))
        linear_bytes = tensor_bytes(tensors) - embeddings - others
        assert linear_bytes / linear_fp32 <= limit, (name, linear_bytes / linear_fp32)


def test_module_patterns_choose_layers_and_a_pattern_matching_nothing_is_an_error(registries, tiny_config):
    pytest.importorskip("torchao")
    cfg = tiny_config(*BASE)
    model = build(registries, "quantizer", {"name": "int8", "modules": ["*.mlp.*"]}).apply(_model(cfg, registries))
    kinds = {n: type(m.weight).__name__ for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert kinds["blocks.0.mlp.proj_in"] == "Int8Tensor" and kinds["blocks.0.attn.qkv"] == "Parameter"
    with pytest.raises(ConfigError, match=r"modules \['\*\.ffn\.\*'\] match no Linear layer"):
        build(registries, "quantizer", {"name": "int8", "modules": ["*.ffn.*"]}).apply(_model(cfg, registries))


def test_bad_nf4_options_name_the_choices(registries):
    with pytest.raises(ConfigError, match="compute_dtype='float8' is not one of: float32, bfloat16, float16"):
        build(registries, "quantizer", {"name": "nf4", "compute_dtype": "float8"})
