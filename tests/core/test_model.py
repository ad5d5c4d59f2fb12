"""The transformer assembled from the real registries: shapes, causality, tying, init, GQA, every
attention × position combination, backend equivalence, and the ordered transform pipeline."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from plugformer.interfaces import ModelTransform, Stage
from plugformer.model import Transformer, apply_transforms, build_model

VOCAB = 64


@pytest.fixture
def make_model(builtin_host, tiny_config):
    """``make_model(attention=..., position=..., seed=..., **model_keys)``: one compose per position
    encoding; the attention backends take no options, so swapping one is a name change."""

    def make(attention: str = "sdpa", position: str = "rope", seed: int = 0, **model_keys) -> Transformer:
        cfg = tiny_config(f"position={position}").copy()
        cfg.attention.name = attention
        for key, value in model_keys.items():
            cfg.model[key] = value
        torch.manual_seed(seed)
        return build_model(cfg, builtin_host.registries, vocab_size=VOCAB).eval()

    return make


def tokens(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_logits_have_one_row_per_token_and_vocab_entry(make_model):
    model = make_model()
    assert model(tokens(3, 10)).shape == (3, 10, VOCAB)
    assert model.dims.max_seq_len == 16 and len(model.blocks) == 2


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope"])
def test_a_future_token_does_not_change_earlier_logits(make_model, position):
    model = make_model(position=position)
    x = tokens(1, 12)
    y = x.clone()
    y[0, 8] = (x[0, 8] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :8], b[:, :8], atol=1e-6)
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_tied_embeddings_share_storage_and_untied_do_not(make_model):
    tied = make_model()
    assert tied.lm_head.weight is tied.tok_emb.weight
    untied = make_model(tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.tok_emb.weight.data_ptr()
    assert untied.num_params() == tied.num_params() + VOCAB * 32


def test_gpt2_init_scales_residual_projections_by_depth(make_model):
    model = make_model(n_layers=8, d_model=64, init_std=0.1)
    scaled = torch.cat([m.weight.flatten() for n, m in model.named_modules() if n.endswith("proj_out")])
    plain = torch.cat([b.attn.qkv.weight.flatten() for b in model.blocks])
    assert plain.std().item() == pytest.approx(0.1, rel=0.05)
    assert scaled.std().item() == pytest.approx(0.1 / math.sqrt(2 * 8), rel=0.05)
    assert all(b.attn.qkv.bias.abs().max() == 0 for b in model.blocks)


def test_grouped_query_attention_uses_fewer_kv_heads(make_model):
    mha, mqa = make_model(), make_model(n_kv_heads=1)
    head_dim = 32 // 4
    assert mqa.blocks[0].attn.qkv.out_features == 32 + 2 * head_dim
    assert mqa.num_params() < mha.num_params()
    assert torch.isfinite(mqa(tokens())).all()


@pytest.mark.parametrize("attention", ["naive", "sdpa"])
@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope"])
def test_every_attention_and_position_builds_and_runs(make_model, attention, position):
    model = make_model(attention, position)
    model.train()
    logits = model(tokens())
    assert logits.shape == (2, 12, VOCAB) and torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_naive_and_sdpa_models_agree_with_the_same_weights(make_model, position):
    naive = make_model("naive", position, seed=1)
    sdpa = make_model("sdpa", position, seed=2)
    assert not torch.equal(naive.tok_emb.weight, sdpa.tok_emb.weight)
    sdpa.load_state_dict(naive.state_dict())
    with torch.no_grad():
        assert torch.allclose(sdpa(tokens()), naive(tokens()), atol=1e-5, rtol=1e-5)


def test_transforms_run_in_stage_order_whatever_order_given():
    applied: list[str] = []

    def transform(stage: Stage, label: str) -> ModelTransform:
        class Recording(ModelTransform):
            def apply(self, model: nn.Module) -> nn.Module:
                applied.append(label)
                return nn.Sequential(model) if self.stage == Stage.WRAP else model

        t = Recording()
        t.stage = stage
        return t

    given = [transform(Stage.WRAP, "ddp"), transform(Stage.COMPILE, "compile"), transform(Stage.ADAPT, "lora"),
             transform(Stage.QUANTIZE, "int8"), transform(Stage.ADAPT, "lora-2"), transform(Stage.SHARD, "tp")]
    base = nn.Linear(2, 2)
    out = apply_transforms(base, given)
    assert applied == ["lora", "lora-2", "int8", "tp", "compile", "ddp"]
    assert isinstance(out, nn.Sequential) and out[0] is base


@pytest.mark.parametrize("attention", ["naive", "sdpa"])
def test_padded_keys_are_invisible_to_real_tokens_in_a_bidirectional_model(builtin_host, tiny_config, attention):
    cfg = tiny_config("objective=mlm", "tokenizer=byte", f"attention={attention}")
    torch.manual_seed(0)
    model = build_model(cfg, builtin_host.registries, vocab_size=VOCAB).eval()
    assert not model.dims.causal
    short, long = tokens(1, 7, seed=1), tokens(1, 12, seed=2)
    batch = torch.cat([torch.cat([short, torch.zeros(1, 5, dtype=torch.long)], dim=1), long])
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[0, 7:] = False  # right padding
    padded = model(batch, padding_mask=mask)
    assert torch.allclose(padded[0, :7], model(short)[0], atol=1e-5)
    assert torch.allclose(padded[1], model(long)[0], atol=1e-5)


def test_a_layer_pattern_alternates_implementations_and_options(builtin_host, tiny_config):
    cfg = tiny_config("model.n_layers=3", "model.layer_pattern=[{attention:{name:naive}},{}]",
                      "model.layer_overrides={-1:{mlp:{hidden_mult:2.0}}}")
    model = build_model(cfg, builtin_host.registries, vocab_size=VOCAB)
    assert [type(b.attn.backend).__name__ for b in model.blocks] == ["NaiveAttention", "SdpaAttention",
                                                                      "NaiveAttention"]
    widths = [b.mlp.proj_in.out_features for b in model.blocks]
    assert widths[-1] == widths[0] // 2
