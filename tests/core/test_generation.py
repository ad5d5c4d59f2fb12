"""Generation: KV-cached decoding matches recomputation, seeded sampling, top-k/top-p, stopping at eos."""
from __future__ import annotations

import pytest
import torch

from plugformer.generation import Generator, Sampling, filter_logits
from plugformer_text.byte_tokenizer import ByteTokenizer

PROMPT = list(b"def main(")


@pytest.fixture
def make_generator(builtin_host, tiny_config):
    """A random tiny model over bytes; a large init spreads the logits so greedy picks are clear-cut."""

    def make(position: str = "rope", attention: str = "sdpa") -> Generator:
        cfg = tiny_config(f"position={position}").copy()
        cfg.attention.name = attention
        cfg.model.max_seq_len = 48
        cfg.model.init_std = 0.3
        torch.manual_seed(0)
        from plugformer.model import build_model

        tokenizer = ByteTokenizer(None)
        model = build_model(cfg, builtin_host.registries, tokenizer.vocab_size)
        return Generator(model, tokenizer, torch.device("cpu"))

    return make


@pytest.mark.parametrize("position", ["learned", "sinusoidal", "rope"])
def test_cached_greedy_decoding_equals_full_recomputation(make_generator, position):
    gen = make_generator(position)
    greedy = Sampling(max_new_tokens=24, temperature=0)
    cached = gen.generate_ids(PROMPT, greedy, use_cache=True)
    assert len(cached) == 24 and cached == gen.generate_ids(PROMPT, greedy, use_cache=False)
    sampled = Sampling(max_new_tokens=24, temperature=1.0, seed=3)
    cached = gen.generate_ids(PROMPT, sampled, use_cache=True)
    assert len(set(cached)) > 1 and cached == gen.generate_ids(PROMPT, sampled, use_cache=False)


def test_cached_logits_match_the_full_forward(make_generator):
    gen = make_generator("rope", "naive")
    ids = torch.tensor([PROMPT + list(b"x = 1")])
    full = gen.model(ids)
    cache = gen.model.new_cache(1, 48)
    steps = [gen.model(ids[:, :4], cache=cache)] + [gen.model(ids[:, t:t + 1], cache=cache)
                                                     for t in range(4, ids.shape[1])]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_same_seed_same_sample_and_different_seeds_differ(make_generator):
    gen = make_generator()
    sample = lambda seed: gen.generate_ids(PROMPT, Sampling(max_new_tokens=16, temperature=1.5, seed=seed))  # noqa: E731
    assert sample(7) == sample(7)
    assert len({tuple(sample(s)) for s in range(4)}) > 1


def test_top_k_of_one_is_greedy(make_generator):
    gen = make_generator()
    greedy = gen.generate_ids(PROMPT, Sampling(max_new_tokens=12, temperature=0))
    assert gen.generate_ids(PROMPT, Sampling(max_new_tokens=12, temperature=2.0, top_k=1, seed=3)) == greedy


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2, top_p=None))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 0.5, 0.3, 0.15, 0.05
    logits = probs.log()
    keep = lambda p: torch.isfinite(filter_logits(logits, top_k=None, top_p=p))[0].tolist()  # noqa: E731
    assert keep(0.4) == [False, True, False, False]
    assert keep(0.7) == [False, True, False, True]
    assert keep(0.9) == [False, True, True, True]
    assert keep(1.0) == [True, True, True, True]  # 1 disables the filter
    assert torch.equal(filter_logits(logits, None, 0.7)[0, [1, 3]], logits[0, [1, 3]])  # kept ones unchanged


def test_generation_stops_at_eos_and_leaves_it_out(make_generator):
    gen = make_generator()
    eos = gen.tokenizer.eos_id
    calls = []

    def eos_on_third_step(module, args, logits):
        calls.append(1)
        if len(calls) == 3:
            logits = logits.clone()
            logits[..., eos] = 1e4
        return logits

    gen.model.register_forward_hook(eos_on_third_step)
    out = gen.generate_ids(PROMPT, Sampling(max_new_tokens=10, temperature=0))
    assert len(out) == 2 and eos not in out and len(calls) == 3


def test_complete_returns_decoded_text(make_generator):
    gen = make_generator()
    text = gen.complete("def ", max_new_tokens=8, temperature=0)
    ids = gen.generate_ids(list(b"def "), Sampling(max_new_tokens=8, temperature=0))
    assert isinstance(text, str) and text == gen.tokenizer.decode(ids)


def test_long_prompt_keeps_its_tail_within_the_context(make_generator):
    gen = make_generator()
    long_prompt = list(range(32, 127)) * 2  # longer than max_seq_len=48
    out = gen.generate_ids(long_prompt, Sampling(max_new_tokens=8, temperature=0))
    tail = long_prompt[-(48 - 8):]
    assert out == gen.generate_ids(tail, Sampling(max_new_tokens=8, temperature=0))
