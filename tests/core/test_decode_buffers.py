"""The engine's decode fast paths, told as a user relies on them: decoding rows read their keys and values
from dense buffers that always hold exactly what the paged pool holds (through joins, leaves, preemption and
prefix-cache hits), the outputs are the same with and without them, and the CPU weight layout changes no
value."""
from __future__ import annotations

import pytest
import torch

from plugformer.engine import Engine, SamplingParams
from plugformer.engine.kv import DecodeBuffers, PagedKVCache
from plugformer.engine.layout import (PackedLinearForward, pack_linear_weights, packing_unavailable,
                                     transpose_linear_weights)
from plugformer.errors import ConfigError

CONTEXT = 96
SHARED = b"# a shared system prompt, the same for every request\n"
PROMPTS = [SHARED + b"def a(", b"import os\n", b"x", SHARED + b"class P:\n    def parse(self):\n", b"for i in ra",
           SHARED + b"return None"]




def pool_rows(cache: PagedKVCache, blocks: list[int], length: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sequence's first ``length`` keys and values read straight from the pool, as (Hkv, length, D)."""
    bs = cache.block_size
    slots = torch.tensor([blocks[p // bs] * bs + p % bs for p in range(length)], dtype=torch.long)
    return cache.k[layer][slots].transpose(0, 1), cache.v[layer][slots].transpose(0, 1)


def assert_buffers_match_pool(engine: Engine) -> int:
    """Every buffered row holds exactly its sequence's keys and values in the pool; returns the rows checked."""
    buffers, checked = engine.buffers, 0
    for seq, row in buffers.row_of.items():
        if seq.finished or not seq.blocks:
            continue
        n = buffers.valid[row]
        assert n <= seq.num_computed
        for layer in range(buffers.n_layers):
            k, v = pool_rows(engine.cache, seq.blocks, n, layer)
            assert torch.equal(buffers.k[layer][row, :, :n], k)
            assert torch.equal(buffers.v[layer][row, :, :n], v)
        checked += 1
    return checked


def test_decode_buffers_hold_what_the_pool_holds_through_joins_leaves_preemption_and_prefix_hits(tiny_model,
                                                                                                  builtin_host):
    net, tokenizer = tiny_model()
    engine = Engine(net, tokenizer, registries=builtin_host.registries, max_batch=4, block_size=4,
                    kv_cache_tokens=120, max_prefill_tokens=24, decode_buffers=True)
    lengths = [20, 6, 14, 9, 25, 17]  # rows leave at different steps
    ids = [engine.add_request(list(p), SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
           for p, n in zip(PROMPTS[:3], lengths)]
    checked = steps = 0
    while engine.has_unfinished() or len(ids) < len(PROMPTS):
        if steps == 4:  # later requests join while the first ones decode; two hit the prefix cache
            ids += [engine.add_request(list(p), SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))
                    for p, n in zip(PROMPTS[3:], lengths[3:])]
        engine.step()
        steps += 1
        checked += assert_buffers_match_pool(engine)
    assert checked > 20
    assert engine.scheduler.num_preemptions > 0  # 120 slots cannot hold every request at once
    assert any(engine.output(i).num_cached_tokens > 0 for i in ids[3:])
    assert engine.stats().kv_decode_buffer_bytes == 0  # given back once nobody decodes
    plain = Engine(net, tokenizer, registries=builtin_host.registries, max_batch=4, block_size=4,
                   kv_cache_tokens=120, max_prefill_tokens=24, decode_buffers=False)
    expected = plain.generate([list(p) for p in PROMPTS],
                              [SamplingParams(max_tokens=n, temperature=0, ignore_eos=True) for n in lengths])
    for request_id, want in zip(ids, expected):
        assert engine.output(request_id).outputs[0].token_ids == want.outputs[0].token_ids


@pytest.mark.parametrize("position,model", [("rope", {"n_kv_heads": 1}), ("alibi", {})])
def test_sampled_outputs_are_the_same_with_and_without_decode_buffers(tiny_model, builtin_host, position, model):
    net, tokenizer = tiny_model(position, **model)
    params = [SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=i) for i in range(len(PROMPTS))]
    outs = [[o.outputs[0].token_ids for o in Engine(net, tokenizer, registries=builtin_host.registries, max_batch=3,
                                                    block_size=4, decode_buffers=flag).generate(
        [list(p) for p in PROMPTS], params)] for flag in (True, False)]
    assert outs[0] == outs[1]


def test_buffer_memory_grows_with_rows_and_length_and_is_counted():
    cache = PagedKVCache(2, 2, 4, num_blocks=9, block_size=4, device=torch.device("cpu"), dtype=torch.float32)
    buffers = DecodeBuffers(cache, max_rows=8, max_len=32)
    assert buffers.bytes_used == 0
    buffers.reserve(3, 10)
    assert buffers.rows >= 3 and buffers.length >= 10
    assert buffers.bytes_used == buffers.zeroed_rows * buffers.zeroed_length * cache.bytes_per_token > 0
    assert all(torch.isfinite(k[:3, :, :10]).all() for k in buffers.k)
    buffers.clear()
    assert buffers.bytes_used == 0 and buffers.k == []


def test_widening_weights_stored_transposed_keep_every_value_and_the_tie(tiny_model):
    net, _ = tiny_model()
    tokens = torch.tensor([list(b"def main(")])
    with torch.no_grad():
        before = net(tokens)
        state = {k: v.clone() for k, v in net.state_dict().items()}
        assert transpose_linear_weights(net) > 0
        after = net(tokens)
    assert net.lm_head.weight is net.tok_emb.weight
    assert not net.lm_head.weight.is_contiguous() and net.lm_head.weight.t().is_contiguous()
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert any(m.out_features < m.in_features for m in linears)  # the MLP's down projection
    for m in linears:  # the contiguous dimension is the longer one
        assert m.weight.t().is_contiguous() if m.out_features > m.in_features else m.weight.is_contiguous()
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(packing_unavailable() is not None, reason=str(packing_unavailable()))
def test_packed_linears_compute_the_same_and_leave_the_model_trainable(tiny_model):
    net, _ = tiny_model()
    tokens = torch.tensor([list(b"def main(")])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        before = net(tokens)
        assert pack_linear_weights(net) == sum(type(m) is torch.nn.Linear for m in net.modules())
        assert pack_linear_weights(net) == 0  # packing twice packs nothing more
        after = net(tokens)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert net.lm_head.weight is net.tok_emb.weight
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    net(tokens).sum().backward()  # with gradients the plain F.linear runs
    assert net.blocks[0].attn.qkv.weight.grad is not None
    with torch.no_grad():  # a weight changed in place after packing is packed again
        net.blocks[0].attn.qkv.weight.mul_(0.5)
        changed = net(tokens)
    net.blocks[0].attn.qkv.forward = torch.nn.Linear.forward.__get__(net.blocks[0].attn.qkv)
    with torch.no_grad():
        torch.testing.assert_close(changed, net(tokens), rtol=1e-5, atol=1e-5)
    assert isinstance(net.lm_head.forward, PackedLinearForward)


@pytest.mark.parametrize("knob", ["decode_buffers", "pack_weights", "transpose_weights"])
def test_a_bad_fast_path_knob_is_one_line(tiny_model, builtin_host, knob):
    net, tokenizer = tiny_model()
    with pytest.raises(ConfigError, match=f"{knob}='yes'"):
        Engine(net, tokenizer, registries=builtin_host.registries, **{knob: "yes"})


def test_the_ragged_mask_is_built_once_per_pass_and_rebuilt_after_a_change():
    from plugformer_attention.common import ragged_visibility
    from plugformer_attention.sdpa import ragged_mask

    offsets, lengths = torch.tensor([3, 7]), torch.tensor([4, 8])
    first = ragged_mask(2, 1, 8, offsets, lengths, causal=True, window=None, device=torch.device("cpu"))
    assert ragged_mask(2, 1, 8, offsets, lengths, causal=True, window=None, device=torch.device("cpu")) is first
    lengths -= 1  # changed in place: the mask must follow
    again = ragged_mask(2, 1, 8, offsets, lengths, causal=True, window=None, device=torch.device("cpu"))
    assert torch.equal(again, ragged_visibility(2, 1, 8, offsets, lengths, causal=True, window=None, device="cpu"))
    assert not torch.equal(again, first)


@pytest.mark.parametrize("decode_buffers", [True, False])
def test_rows_that_all_sit_at_one_position_decode_in_the_single_sequence_form(tiny_model, builtin_host,
                                                                               decode_buffers):
    """A lone request is not ragged: the backends get a plain int offset and no key lengths (no mask, the
    kernels' fast paths), and the tokens are those of the ragged form."""
    net, tokenizer = tiny_model("rope")
    seen: list[tuple[type, bool]] = []
    backend = net.blocks[0].attn.backend
    forward = backend.forward

    def spy(q, k, v, **kw):
        seen.append((type(kw["q_offset"]), kw.get("kv_lengths") is None))
        return forward(q, k, v, **kw)

    backend.forward = spy
    engine = Engine(net, tokenizer, registries=builtin_host.registries, block_size=4, decode_buffers=decode_buffers,
                    prefix_caching=False)
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    fast = engine.generate([list(b"def main(")], params)[0]
    assert seen and all(kind is int and no_lengths for kind, no_lengths in seen)

    from plugformer.engine import kv

    for batch_type in (kv.DecodeBatch, kv.PagedBatch):  # the same requests, forced through the ragged form
        batch_type.uniform_offset = property(lambda self: None, lambda self, value: None)
    try:
        seen.clear()
        ragged = engine.generate([list(b"def main(")], params)[0]
    finally:
        for batch_type in (kv.DecodeBatch, kv.PagedBatch):
            del batch_type.uniform_offset
    assert seen and all(kind is not int for kind, _ in seen)
    assert [c.token_ids for c in ragged.outputs] == [c.token_ids for c in fast.outputs]
