"""The inference engine, told as a user would rely on it: a batch of requests of every shape gives each
request exactly what decoding it alone gives; memory comes back; bad requests are refused in one line."""
from __future__ import annotations

import pytest
import torch

from plugformer.engine import Engine, QueueFull, RaggedUnsupported, SamplingParams
from plugformer.errors import ConfigError
from plugformer.generation import Sampling, generate

CONTEXT = 96




@pytest.fixture
def engine_for(tiny_model, builtin_host):
    def make(position: str = "learned", attention: str = "sdpa", model: dict | None = None, **knobs) -> Engine:
        net, tokenizer = tiny_model(position, attention, **(model or {}))
        return Engine(net, tokenizer, registries=builtin_host.registries, **knobs)

    return make


def alone(engine: Engine, prompt: bytes, max_tokens: int) -> list[int]:
    """Greedy decoding of one prompt by full recomputation (no cache, no batch): the reference."""
    out = generate(engine.model, [list(prompt)], Sampling(max_new_tokens=max_tokens, temperature=0),
                   eos_id=None, use_cache=False)
    return out[0].tokens


PROMPTS = [b"def main(", b"import os\n", b"x", b"class Parser(object):\n    def parse(self, text):\n", b"for i in ra",
           b"return None if value is None else str(value)"]


def test_a_mixed_batch_decodes_each_request_as_if_it_were_alone(engine_for):
    engine = engine_for(max_batch=4, block_size=4, max_prefill_tokens=16)
    greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    first = [engine.add_request(list(p), greedy) for p in PROMPTS[:3]]
    for _ in range(3):  # the others join while the first ones are decoding
        engine.step()
    later = [engine.add_request(list(p), greedy) for p in PROMPTS[3:]]
    while engine.has_unfinished():
        engine.step()
    for request_id, prompt in zip(first + later, PROMPTS):
        out = engine.output(request_id).outputs[0]
        assert out.token_ids == alone(engine, prompt, 12), prompt
        assert out.finish_reason == "length"
    assert engine.stats().kv_blocks_used == 0


def test_a_wide_batch_decodes_in_groups_of_rows_and_answers_in_prompt_order(engine_for):
    """More rows than one attention group (the SDPA backend decodes groups of 8 rows, each reading keys up to
    its longest row) and prompts submitted longest first: still each request's own greedy output, in the
    order the prompts were given."""
    prompts = [p[:n] for p in PROMPTS for n in (3, 11)] + PROMPTS[:2]  # 14 prompts of 1-45 bytes
    engine = engine_for(max_batch=16, block_size=4)
    outs = engine.generate([list(p) for p in prompts], SamplingParams(max_tokens=10, temperature=0, ignore_eos=True))
    assert [o.prompt_token_ids for o in outs] == [list(p) for p in prompts]
    for out, prompt in zip(outs, prompts):
        assert out.outputs[0].token_ids == alone(engine, prompt, 10), prompt
    assert engine.stats().kv_blocks_used == 0


def test_prefix_cache_hits_and_preemption_keep_outputs_exact(engine_for):
    shared = b"# a long shared system prompt, the same for every request\n"
    prompts = [shared + tail for tail in (b"def a(", b"def bb(", b"import c", b"x = 1")]
    engine = engine_for(max_batch=4, block_size=4, kv_cache_tokens=160, max_prefill_tokens=24)
    outs = engine.generate([list(p) for p in prompts], SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))
    for out, prompt in zip(outs, prompts):
        assert out.outputs[0].token_ids == alone(engine, prompt, 20)
    cached = sorted(o.num_cached_tokens for o in outs)
    assert all(n >= 32 for n in cached[1:])  # every request after the first reused the shared prefix's blocks
    assert engine.scheduler.num_preemptions > 0  # 160 slots cannot hold 4 × ~85 tokens at once
    assert engine.stats().kv_blocks_used == 0


def test_seeded_sampling_does_not_depend_on_the_other_requests(engine_for):
    engine = engine_for()
    params = SamplingParams(max_tokens=16, temperature=1.0, top_k=50, top_p=0.9, seed=11)
    alone_out = engine.generate(list(b"def main("), params)[0].outputs[0].token_ids
    crowd = engine.generate([list(p) for p in PROMPTS[:4]] + [list(b"def main(")],
                            [SamplingParams(max_tokens=16, temperature=1.2, seed=i) for i in range(4)] + [params])
    assert crowd[-1].outputs[0].token_ids == alone_out
    old_path = generate(engine.model, [list(b"def main(")], Sampling(max_new_tokens=16, temperature=1.0, top_k=50,
                                                                       top_p=0.9, seed=11), eos_id=None)
    assert old_path[0].tokens == alone_out  # the same tokens plugformer generate gave before the engine


def test_n_samples_share_the_prompt_and_differ(engine_for):
    engine = engine_for(block_size=4)
    out = engine.generate(list(b"def main(): return 1\n" * 2), SamplingParams(max_tokens=8, temperature=1.5, n=3,
                                                                               seed=5))[0]
    assert [o.index for o in out.outputs] == [0, 1, 2]
    assert len({tuple(o.token_ids) for o in out.outputs}) > 1
    assert out.num_cached_tokens > 0  # samples 1 and 2 reused sample 0's prompt blocks


def test_stop_strings_match_across_tokens_and_are_left_out(engine_for):
    engine = engine_for()
    free = engine.generate("def main(", SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))[0].outputs[0]
    stop = free.text[5:8]  # three bytes = three tokens of the byte tokenizer
    out = engine.generate("def main(", SamplingParams(max_tokens=30, temperature=0, stop=[stop],
                                                      ignore_eos=True))[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == free.text[:free.text.index(stop)]
    kept = engine.generate("def main(", SamplingParams(max_tokens=30, temperature=0, stop=stop, ignore_eos=True,
                                                       include_stop_str_in_output=True))[0].outputs[0]
    assert kept.text == free.text[:free.text.index(stop) + 3]
    by_id = engine.generate("def main(", SamplingParams(max_tokens=30, temperature=0, ignore_eos=True,
                                                        stop_token_ids=[free.token_ids[4]]))[0].outputs[0]
    assert by_id.token_ids == free.token_ids[:free.token_ids.index(free.token_ids[4])]
    assert by_id.stop_reason == free.token_ids[4]


def test_streaming_deltas_add_up_and_never_split_a_character(engine_for):
    engine = engine_for()
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=3, ignore_eos=True)
    whole = engine.generate("é", params)[0].outputs[0]
    deltas = list(engine.stream("é", params))
    assert "".join(d.text_delta for d in deltas) == whole.text
    assert [t for d in deltas for t in d.token_ids] == whole.token_ids
    assert deltas[-1].finish_reason == "length"
    for d in deltas:
        d.text_delta.encode("utf-8")  # a lone surrogate or split character would not encode


def test_logprobs_report_the_chosen_token_and_alternatives(engine_for):
    engine = engine_for()
    out = engine.generate("def", SamplingParams(max_tokens=5, temperature=0, logprobs=3, ignore_eos=True))[0]
    first = out.outputs[0]
    assert len(first.logprobs) == 5
    for token, entry in zip(first.token_ids, first.logprobs):
        assert entry[token].rank == 1  # greedy picks the most likely token
        assert len(entry) == 3 and all(v.logprob <= 0 for v in entry.values())
    assert first.cumulative_logprob == pytest.approx(sum(e[t].logprob for t, e in zip(first.token_ids,
                                                                                         first.logprobs)))


def test_penalties_change_the_output(engine_for):
    engine = engine_for()
    plain = engine.generate("aaaa", SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))[0].outputs[0]
    penalised = engine.generate("aaaa", SamplingParams(max_tokens=20, temperature=0, ignore_eos=True,
                                                       frequency_penalty=2.0, repetition_penalty=1.5))[0].outputs[0]
    assert len(set(penalised.token_ids)) > len(set(plain.token_ids))


def test_cancelled_requests_leave_no_blocks_behind(engine_for):
    engine = engine_for(block_size=4)
    ids = [engine.add_request(list(p), SamplingParams(max_tokens=40, temperature=0)) for p in PROMPTS]
    engine.step()
    engine.step()
    assert engine.stats().kv_blocks_used > 0
    for request_id in ids:
        engine.abort(request_id)
    engine.step()
    assert engine.stats().kv_blocks_used == 0
    assert {engine.output(r).outputs[0].finish_reason for r in ids} == {"abort"}


def test_closing_a_stream_early_aborts_it(engine_for):
    engine = engine_for(block_size=4)
    stream = engine.stream("def main(", SamplingParams(max_tokens=50, temperature=0, ignore_eos=True))
    next(stream)
    stream.close()
    assert engine.stats().kv_blocks_used == 0 and not engine.requests


def test_a_prompt_past_the_context_is_refused_naming_both_numbers(engine_for):
    engine = engine_for()
    with pytest.raises(ConfigError, match=r"80 tokens.*max_tokens=30.*96"):
        engine.add_request([1] * 80, SamplingParams(max_tokens=30))


def test_a_full_queue_refuses_more(engine_for):
    engine = engine_for(max_waiting=2)
    engine.add_request("a", SamplingParams(max_tokens=2))
    engine.add_request("b", SamplingParams(max_tokens=2))
    with pytest.raises(QueueFull):
        engine.add_request("c", SamplingParams(max_tokens=2))


@pytest.mark.parametrize("field,value", [("temperature", -1.0), ("top_p", 0.0), ("n", 0), ("max_tokens", 0),
                                         ("logprobs", 21), ("presence_penalty", 3.0), ("stop", [""])])
def test_bad_sampling_params_are_one_line_errors_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SamplingParams(**{field: value})


def test_a_component_without_the_ragged_capability_is_refused_by_name(tiny_model, builtin_host):
    net, tokenizer = tiny_model()
    entry = builtin_host.registries.attention.get("sdpa")
    registries = builtin_host.registries
    saved = dict(entry.capabilities)
    entry.capabilities.pop("ragged", None)
    try:
        with pytest.raises(RaggedUnsupported, match=r"attention 'sdpa'.*'ragged'"):
            Engine(net, tokenizer, registries=registries)
    finally:
        entry.capabilities.update(saved)


def test_speculative_greedy_equals_plain_greedy(tiny_model, builtin_host):
    target, tokenizer = tiny_model()
    torch.manual_seed(1)
    draft, _ = tiny_model(n_layers=1)
    # a draft that is often right: the target itself with its last layers dropped would be typical; here the
    # target's own weights make every proposal right, and an unrelated random draft makes most of them wrong
    greedy = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    plain = Engine(target, tokenizer, registries=builtin_host.registries, block_size=4)
    expected = [o.outputs[0].token_ids for o in plain.generate([list(p) for p in PROMPTS], greedy)]
    for helper, k in ((draft, 3), (target, 4)):
        spec = Engine(target, tokenizer, registries=builtin_host.registries, block_size=4, draft=helper,
                      num_speculative_tokens=k, max_batch=3)
        outs = spec.generate([list(p) for p in PROMPTS], greedy)
        assert [o.outputs[0].token_ids for o in outs] == expected
        assert spec.stats().kv_blocks_used == 0
    assert spec.speculator.acceptance_rate == 1.0  # the target drafting for itself is always right


def test_a_draft_with_another_vocabulary_is_refused(tiny_model, builtin_host, tiny_config):
    target, tokenizer = tiny_model()
    from plugformer.model import build_model

    cfg = tiny_config("position=learned").copy()
    cfg.model.max_seq_len = CONTEXT
    other = build_model(cfg, builtin_host.registries, 300)
    with pytest.raises(ConfigError, match="vocabulary"):
        Engine(target, tokenizer, registries=builtin_host.registries, draft=other)


def test_structured_output_always_parses(engine_for):
    import json
    import re

    from plugformer.interfaces import GuideSpec

    engine = engine_for(guide={"name": "llguidance", "any_whitespace": False})
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]{1,8}$"},
                                               "age": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["name", "age"], "additionalProperties": False}
    specs = [GuideSpec("json_schema", schema), GuideSpec("regex", r"[a-c]{2,5}-\d{3}"),
             GuideSpec("choice", ["yes", "no", "maybe"])]
    params = [SamplingParams(max_tokens=80, temperature=1.0, seed=s, structured=spec)
              for spec in specs for s in range(4)]
    outs = engine.generate(["answer: "] * len(params), params)
    for p, out in zip(params, outs):
        text = out.outputs[0].text
        assert out.outputs[0].finish_reason == "stop", text
        if p.structured.kind == "json_schema":
            value = json.loads(text)
            assert set(value) == {"name", "age"} and isinstance(value["age"], int)
        elif p.structured.kind == "regex":
            assert re.fullmatch(r"[a-c]{2,5}-\d{3}", text)
        else:
            assert text in ("yes", "no", "maybe")


@pytest.mark.parametrize("position,attention,model,window", [
    ("rope", "sdpa", {"n_kv_heads": 1}, None),  # grouped-query attention
    ("rope", "naive", {}, 8),  # sliding window
    ("alibi", "sdpa", {}, None),
    ("sinusoidal", "naive", {"n_kv_heads": 1}, 6),
    ("none", "sdpa", {}, None),
])
def test_every_builtin_position_and_backend_batches_exactly(tiny_model, builtin_host, position, attention, model,
                                                            window):
    net, tokenizer = tiny_model(position, attention, **model)
    if window is not None:
        for block in net.blocks:
            block.attn.backend.window = window
    engine = Engine(net, tokenizer, registries=builtin_host.registries, max_batch=3, block_size=4,
                    max_prefill_tokens=12)
    outs = engine.generate([list(p) for p in PROMPTS], SamplingParams(max_tokens=10, temperature=0, ignore_eos=True))
    for out, prompt in zip(outs, PROMPTS):
        assert out.outputs[0].token_ids == alone(engine, prompt, 10), prompt


@pytest.mark.parametrize("quantizer", ["bf16", "int8", "nf4"])
def test_quantized_models_batch_exactly(tiny_model, builtin_host, quantizer):
    from plugformer.build import build

    pytest.importorskip({"bf16": "torch", "int8": "torchao", "nf4": "bitsandbytes"}[quantizer])
    net, tokenizer = tiny_model()
    net = build(builtin_host.registries, "quantizer", {"name": quantizer}).apply(net)
    engine = Engine(net, tokenizer, registries=builtin_host.registries, max_batch=3, block_size=4)
    outs = engine.generate([list(p) for p in PROMPTS[:4]], SamplingParams(max_tokens=8, temperature=0,
                                                                          ignore_eos=True))
    for out, prompt in zip(outs, PROMPTS):
        assert out.outputs[0].token_ids == alone(engine, prompt, 8), prompt


def test_a_lora_adapter_applied_unmerged_batches_exactly(tiny_model, builtin_host):
    from plugformer.build import build

    net, tokenizer = tiny_model()
    net = build(builtin_host.registries, "adapter", {"name": "lora", "r": 4}).apply(net)
    torch.manual_seed(3)
    for name, param in net.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.5)  # a trained adapter: it changes the output
    engine = Engine(net, tokenizer, registries=builtin_host.registries, max_batch=3, block_size=4)
    outs = engine.generate([list(p) for p in PROMPTS[:4]], SamplingParams(max_tokens=8, temperature=0,
                                                                          ignore_eos=True))
    for out, prompt in zip(outs, PROMPTS):
        assert out.outputs[0].token_ids == alone(engine, prompt, 8), prompt
