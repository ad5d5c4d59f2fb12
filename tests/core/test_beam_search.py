"""Beam search as a user moving from Hugging Face would check it: tiny random GPT-2 and Llama models made with
transformers (no downloads) are imported into plugformer, and ``beam_search`` must return what
``generate(num_beams=4, do_sample=False)`` returns, token for token, with the same sequence scores, across
length penalties, early-stopping modes, an eos id the beams really produce, and several returned sequences.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="beam search is checked against transformers")

from plugformer.checkpoint import load_model_for_inference
from plugformer.engine.beam import BeamResult, beam_search
from plugformer.errors import ConfigError
from plugformer.interfaces import DecodeCache, KVCache
from plugformer.plugins import load_plugins
from plugformer_hf.import_hf import import_hf

EOS = "<|endoftext|>"
VOCAB = 300
CONTEXT = 64
MAX_NEW = 20
BEAMS = 4
SCORE_TOLERANCE = 1e-4
PROMPTS = [[5, 17, 42, 99, 3], [250, 7], [12, 12, 180, 64, 33, 201, 9, 140]]

#: (length_penalty, early_stopping, which eos, num_return_sequences): "frequent" runs each prompt with each of
#: the tokens its beams produce most as eos (so beams finish early and the early-stopping rules decide), "rare"
#: with the tokenizer's own end-of-text id (beams mostly run to the end)
CASES = {
    "lp1_no_early_stop_all_returned": (1.0, False, "frequent", BEAMS),
    "lp1_early_stop_best_only": (1.0, True, "frequent", 1),
    "lp0.5_early_stop_two_returned": (0.5, True, "frequent", 2),
    "lp2_no_early_stop_all_returned": (2.0, False, "frequent", BEAMS),
    "lp2_early_stop_all_returned": (2.0, True, "frequent", BEAMS),
    "lp1_never_all_returned": (1.0, "never", "frequent", BEAMS),
    "lp0_never_canonical_two_returned": (0.0, "never", "frequent", 2),
    "lp1_eos_of_the_tokenizer_all_returned": (1.0, False, "rare", BEAMS),
}


def write_tokenizer(directory: Path) -> None:
    """A word-level ``tokenizer.json`` of ``VOCAB`` ids with ``<|endoftext|>`` = 0 (the ids are what matter)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {EOS: 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([EOS])
    tok.save(str(directory / "tokenizer.json"))


def tiny_hf_model(directory: Path, family: str) -> nn.Module:
    """A seeded random 2-layer, width-64 model of ``family`` with peaked (perturbed) weights, saved to ``directory``."""
    directory.mkdir(parents=True)
    write_tokenizer(directory)
    common = {"vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 0}
    if family == "gpt2":
        config = transformers.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=CONTEXT, **common)
    else:
        config = transformers.LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                          max_position_embeddings=CONTEXT, **common)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(directory)
    return model


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def models(request, tmp_path_factory):
    """(the HF model, the same model imported into plugformer, (prompt, eos id) pairs: every prompt with
    each of its frequent tokens as eos)."""
    root = tmp_path_factory.mktemp(request.param)
    hf_model = tiny_hf_model(root / "hf", request.param)
    out = import_hf(root / "hf", root / "plugformer").out
    ours = load_model_for_inference(out, load_plugins().registries, device="cpu").model
    return hf_model, ours, [(p, e) for p in PROMPTS for e in frequent_tokens(hf_model, p)]


def frequent_tokens(hf_model: nn.Module, prompt: list[int], count: int = 2) -> list[int]:
    """The ``count`` tokens most common in transformers' four beams continuing ``prompt``: as eos ids, beams
    reach them early and often."""
    out = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            num_beams=BEAMS, num_return_sequences=BEAMS, do_sample=False, max_new_tokens=MAX_NEW,
                            eos_token_id=0, pad_token_id=0)
    return [token for token, _ in Counter(out[:, len(prompt):].flatten().tolist()).most_common(count) if token]


def hf_beams(hf_model: nn.Module, prompt: list[int], eos: int, length_penalty: float, early_stopping: bool | str,
             num_return_sequences: int) -> list[BeamResult]:
    """What transformers' beam search returns, in plugformer's terms (eos and padding cut off)."""
    out = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                            num_beams=BEAMS, do_sample=False, max_new_tokens=MAX_NEW, length_penalty=length_penalty,
                            early_stopping=early_stopping, num_return_sequences=num_return_sequences,
                            eos_token_id=eos, pad_token_id=eos, output_scores=True, return_dict_in_generate=True)
    results = []
    for row, score in zip(out.sequences, out.sequences_scores):
        new = row[len(prompt):].tolist()
        if eos in new:
            results.append(BeamResult(new[:new.index(eos)], float(score), "stop"))
        else:
            assert len(new) == MAX_NEW
            results.append(BeamResult(new, float(score), "length"))
    return results


@pytest.mark.parametrize("case", sorted(CASES))
def test_beam_search_returns_what_transformers_returns(models, case):
    hf_model, ours, requests = models
    length_penalty, early_stopping, which_eos, returned = CASES[case]
    stopped = 0
    for prompt, eos in requests if which_eos == "frequent" else [(p, 0) for p in PROMPTS]:
        theirs = hf_beams(hf_model, prompt, eos, length_penalty, early_stopping, returned)
        mine = beam_search(ours, prompt, num_beams=BEAMS, max_tokens=MAX_NEW, eos_id=eos,
                           length_penalty=length_penalty, early_stopping=early_stopping,
                           num_return_sequences=returned)
        assert len(mine) == len(theirs) == returned
        for a, b in zip(mine, theirs):
            assert (a.token_ids, a.finish_reason) == (b.token_ids, b.finish_reason), (prompt, eos)
            assert abs(a.score - b.score) < SCORE_TOLERANCE, (prompt, eos, a.score, b.score)
        assert [r.score for r in mine] == sorted((r.score for r in mine), reverse=True)
        stopped += sum(r.finish_reason == "stop" for r in mine)
    if which_eos == "frequent" and (length_penalty < 2.0 or early_stopping is True):
        # (with a penalty of 2 and no early stop, long hypotheses may outscore every eos-ended one)
        assert stopped > 0  # the eos ids really ended returned beams, so their handling was compared


def test_length_penalty_changes_which_beam_wins(models):
    """The cases above are not all the same search: a strong length penalty prefers longer hypotheses."""
    _, ours, requests = models
    lengths = {}
    for penalty in (-1.0, 3.0):
        runs = [beam_search(ours, p, num_beams=BEAMS, max_tokens=MAX_NEW, eos_id=e, length_penalty=penalty)[0]
                for p, e in requests]
        lengths[penalty] = sum(len(r.token_ids) for r in runs)
    assert lengths[3.0] > lengths[-1.0]


def test_early_stopping_changes_the_hypotheses_found(models):
    """Stopping as soon as four hypotheses are finished is not the same search as stopping when none can
    improve (so the early-stopping cases above compare different rules)."""
    _, ours, requests = models
    found = {mode: [[r.token_ids for r in beam_search(ours, p, num_beams=BEAMS, max_tokens=MAX_NEW, eos_id=e,
                                                        early_stopping=mode, num_return_sequences=BEAMS)]
                    for p, e in requests] for mode in (True, False)}
    assert found[True] != found[False]


class Uncached(nn.Module):
    """A model without a KV cache: plain ``forward(tokens) -> logits``."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.inner(tokens)


def test_a_model_without_a_kv_cache_is_recomputed_to_the_same_beams(models):
    _, ours, requests = models
    prompt, eos = requests[0]
    options = dict(num_beams=BEAMS, max_tokens=MAX_NEW, eos_id=eos, num_return_sequences=3)
    cached, recomputed = beam_search(ours, prompt, **options), beam_search(Uncached(ours), prompt, **options)
    assert [r.token_ids for r in cached] == [r.token_ids for r in recomputed]
    assert all(abs(a.score - b.score) < SCORE_TOLERANCE for a, b in zip(cached, recomputed))


def test_the_prompt_is_prefilled_once_then_every_beam_decodes_one_token_per_step(models):
    _, ours, _ = models
    shapes = []
    handle = ours.register_forward_hook(lambda _m, args, _out: shapes.append(tuple(args[0].shape)))
    try:
        results = beam_search(ours, PROMPTS[2], num_beams=BEAMS, max_tokens=MAX_NEW, eos_id=None)
    finally:
        handle.remove()
    assert shapes[0] == (1, len(PROMPTS[2]))
    assert shapes[1:] == [(BEAMS, 1)] * (MAX_NEW - 1)
    assert len(results[0].token_ids) == MAX_NEW and results[0].finish_reason == "length"


def test_training_mode_is_restored(models):
    _, ours, _ = models
    ours.train()
    try:
        beam_search(ours, PROMPTS[1], num_beams=2, max_tokens=3, eos_id=None)
        assert ours.training
    finally:
        ours.eval()


def test_reorder_keeps_and_copies_cache_rows():
    layer = KVCache(2, 1, 3, 2, "cpu", torch.float32)
    layer.k[1] += 1.0
    layer.v[0] += 5.0
    cache = DecodeCache([layer])
    cache.reorder(torch.tensor([1, 1, 0]))
    assert layer.k.shape == (3, 1, 3, 2)
    assert layer.k[:, 0, 0, 0].tolist() == [1.0, 1.0, 0.0]
    assert layer.v[:, 0, 0, 0].tolist() == [0.0, 0.0, 5.0]


@pytest.mark.parametrize(("options", "message"), [
    ({"num_beams": 0}, "num_beams=0 must be an integer >= 1"),
    ({"num_return_sequences": 5}, "num_return_sequences=5 must be an integer from 1 to num_beams=4"),
    ({"early_stopping": "sometimes"}, "early_stopping='sometimes' must be one of True, False, 'never'"),
    ({"max_tokens": 0}, "max_tokens=0 must be an integer >= 1"),
    ({"length_penalty": float("nan")}, "length_penalty=nan must be a finite number"),
    ({"max_tokens": 60}, "the prompt is 5 tokens, but with max_new_tokens=60 the model's context of 64 tokens"),
])
def test_bad_options_are_refused_in_one_line(models, options, message):
    _, ours, _ = models
    request = dict(num_beams=BEAMS, max_tokens=MAX_NEW, eos_id=0) | options
    with pytest.raises(ConfigError) as err:
        beam_search(ours, PROMPTS[0], **request)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_an_empty_prompt_starts_from_the_eos_id(models):
    _, ours, _ = models
    options = dict(num_beams=BEAMS, max_tokens=8, num_return_sequences=2)
    assert beam_search(ours, [], eos_id=0, **options) == beam_search(ours, [0], eos_id=0, **options)
    with pytest.raises(ConfigError, match="an empty prompt needs an eos_id"):
        beam_search(ours, [], eos_id=None, **options)


def test_one_beam_is_greedy_decoding(models):
    from plugformer.generation import Sampling, generate

    _, ours, requests = models
    for prompt, eos in requests:
        beam = beam_search(ours, prompt, num_beams=1, max_tokens=MAX_NEW, eos_id=eos)[0]
        greedy = generate(ours, [prompt], Sampling(max_new_tokens=MAX_NEW, temperature=0.0), eos_id=eos)[0]
        assert beam.token_ids == greedy.tokens
        assert beam.finish_reason == {"eos": "stop", "length": "length"}[greedy.finish_reason]
