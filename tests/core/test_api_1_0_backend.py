"""A third-party attention backend written for plugin API 1.0 keeps working under API 1.1: its ``forward``
has no ``kv_lengths`` parameter and it does not declare ``ragged``, yet a model built with it through the
normal path trains and decodes (one sequence, with the KV cache) through ``plugformer.generation.generate``.
Only the inference engine's ragged batches need the 1.1 additions (the engine refuses such a backend by name)."""
from __future__ import annotations

from pathlib import Path

import torch

from plugformer import hookimpl
from plugformer.build import build
from plugformer.config import compose_checked
from plugformer.config.searchpath import register_search_path_plugin
from plugformer.config.store import store_component_configs
from plugformer.generation import Sampling, generate
from plugformer.plugins import LoadSettings
from plugformer.training import Trainer

BACKEND_1_0 = '''
import math
import torch
from plugformer.interfaces import Attention, causal_mask

CALLS = []


class OldStyleAttention(Attention):
    """Exactly the API 1.0 signature: no kv_lengths, q_offset an int."""

    def forward(self, q, k, v, *, causal, attn_bias=None, q_offset=0):
        CALLS.append((type(q_offset).__name__, q_offset, q.shape[2], k.shape[2]))
        groups = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if attn_bias is not None:
            scores = scores + attn_bias
        if causal:
            scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2], q_offset, q.device), float("-inf"))
        return torch.softmax(scores, -1) @ v
'''


@hookimpl
def _register(registries):
    registries.attention.register("old_style", "old_style_attention:OldStyleAttention",
                                  description="an attention backend written for plugin API 1.0",
                                  capabilities={"devices": ["cpu"], "causal": True, "kv_cache": True,
                                                "attention_bias": True, "gqa": True})


def test_an_api_1_0_backend_trains_and_decodes(host, fake_plugin, module_file, tmp_path: Path):
    module_file("old_style_attention", BACKEND_1_0)
    host.load_entry_points([fake_plugin("old_style_plugin", "old_style", dist="old-style-attention",
                                        plugformer_api="1.0", plugformer_register=_register)], LoadSettings())
    record = {r.name: r for r in host.records}["old_style"]
    assert (record.status, record.api) == ("loaded", "1.0")
    assert not host.registries.attention.get("old_style").capabilities.get("ragged")

    store_component_configs(host.registries)
    register_search_path_plugin()
    cfg = compose_checked("train", ["model.n_layers=2", "model.d_model=32", "model.n_heads=4", "model.n_kv_heads=2",
                                    "data.seq_len=16", "attention=old_style", "position=rope", "tokenizer=byte",
                                    "data.max_bytes=200000", f"data.cache_dir={tmp_path / 'cache'}",
                                    "trainer.batch_size=2", "model.dropout=0.0", "seed=0"], host)
    strategy = build(host.registries, "parallel", cfg.parallel)
    trainer = Trainer(cfg, tmp_path / "run", host, strategy, strategy.setup("cpu"))
    from old_style_attention import CALLS, OldStyleAttention

    assert isinstance(trainer.model.blocks[0].attn.backend, OldStyleAttention)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    losses = []
    for step in (1, 2):
        trainer.step = step
        losses.append(float(trainer.train_step()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # it learned

    CALLS.clear()
    sampling = Sampling(max_new_tokens=6, temperature=0.0)
    cached = generate(trainer.model, [[5, 17, 42, 9]], sampling, eos_id=None)
    assert any(offset > 0 for _, offset, _, _ in CALLS) and {kind for kind, *_ in CALLS} == {"int"}
    recomputed = generate(trainer.model, [[5, 17, 42, 9]], sampling, eos_id=None, use_cache=False)
    assert cached[0].tokens == recomputed[0].tokens and len(cached[0].tokens) == 6
