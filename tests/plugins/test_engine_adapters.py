"""One engine, one base model, several LoRA fine-tunes: each request names its adapter and rows of one
batch use different adapters; every request gets what its adapter alone gives."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from plugformer.build import build
from plugformer.checkpoint import attach_adapter
from plugformer.engine import Engine, SamplingParams
from plugformer.errors import ConfigError
from plugformer.generation import Sampling, generate
from plugformer.model import build_model
from plugformer_text.byte_tokenizer import ByteTokenizer

pytest.importorskip("peft", reason="peft is not installed (pip install 'plugformer[lora]')")

BASE = ("tokenizer=byte", "data.max_bytes=200000", "model.dropout=0.0", "position=rope", "model.max_seq_len=48")


def _base(cfg, registries):
    torch.manual_seed(0)
    return build_model(cfg, registries, 259).eval()


def _saved_adapter(cfg, registries, out: Path, seed: int) -> Path:
    adapter = build(registries, "adapter", {"name": "lora", "r": 4})
    model = adapter.apply(_base(cfg, registries))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    adapter.save_artifacts(out)
    return out / "adapter"


def test_rows_of_one_batch_use_their_own_adapters(registries, tiny_config, tmp_path):
    cfg = tiny_config(*BASE)
    dirs = {"a": _saved_adapter(cfg, registries, tmp_path / "a", 1),
            "b": _saved_adapter(cfg, registries, tmp_path / "b", 2)}
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
