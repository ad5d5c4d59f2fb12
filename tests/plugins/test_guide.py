"""Structured output: a user asks for JSON matching a schema, text matching a regex, one of a few choices or
text of a grammar, and whatever the model's logits say, the masked decoding loop produces exactly that.

The "model" here is the harshest one: random logits (seeded), so every token the mask lets through is
eventually sampled. Each story runs 20 seeds as the 20 rows of one batch, the way the engine calls the
guide (``new_bitmask`` → ``Guide.fill_bitmasks`` → ``mask_logits`` → sample → ``accept``), and once more
row by row through ``GuideMatcher.allowed()``.
"""
from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from plugformer import ConfigError, PlugformerError, UnavailableError
from plugformer.interfaces import (
    Guide,
    GuideMatcher,
    GuideSpec,
    Tokenizer,
    Vocabulary,
    build_guide,
    mask_logits,
    new_bitmask,
    pack_allowed,
    unpack_bitmask,
)
from plugformer.plugins import load_plugins

pytest.importorskip("llguidance", reason="llguidance is not installed (pip install 'plugformer[guide]')")

from plugformer_text.bpe_tokenizer import BPETokenizer
from plugformer_text.byte_tokenizer import ByteTokenizer
from plugformer_text.schemas import BPETokenizerConfig, UnigramTokenizerConfig
from plugformer_text.unigram_tokenizer import UnigramTokenizer

SEEDS = 20
MAX_STEPS = 4000  # random logits end every story below far sooner; reaching this is a failure
CORPUS = [
    '{"name": "bob", "age": 33, "tags": ["red", "green"], "admin": false}\n',
    "def add(a, b):\n    return a + b\n",
    "naïve café 数学 🚀 yes no maybe\n",
    "order ab-12 and xyz-7.5 then 559+63\n",
] * 20

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "admin": {"type": "boolean"},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
PRODUCT_CODE = r"[a-z]{2,5}-[0-9]{1,3}(\.[0-9])?"
CHOICES = ["yes", "no", "maybe later", "数学 🚀"]
SUM_GRAMMAR = 'start: expr\nexpr: term ("+" term)*\nterm: /[0-9]{1,3}/'


@pytest.fixture(scope="module")
def registries():
    return load_plugins().registries


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    """A tiny trained BPE and Unigram (the test corpus) and the byte tokenizer."""
    bpe = BPETokenizer(BPETokenizerConfig(vocab_size=400))
    bpe.fit(CORPUS)
    unigram = UnigramTokenizer(UnigramTokenizerConfig(vocab_size=360))
    unigram.fit(CORPUS)
    return {"bpe": bpe, "unigram": unigram, "byte": ByteTokenizer(None)}


@pytest.fixture(scope="module")
def guides(registries, tokenizers) -> dict[str, Guide]:
    return {name: build_guide(registries, "llguidance", tok) for name, tok in tokenizers.items()}


def decode_batch(guide: Guide, tokenizer: Tokenizer, spec: GuideSpec, seeds: int = SEEDS) -> list[str]:
    """The engine's loop over one batch: one row per seed, random logits, masked every step."""
    matchers = [guide.compile(spec) for _ in range(seeds)]
    out: list[list[int]] = [[] for _ in range(seeds)]
    live = list(range(seeds))
    bitmask = new_bitmask(seeds, guide.vocabulary.size)
    generator = torch.Generator().manual_seed(1234)
    for _ in range(MAX_STEPS):
        if not live:
            break
        guide.fill_bitmasks([matchers[i] if i in live else None for i in range(seeds)], bitmask)
        logits = mask_logits(torch.randn(seeds, guide.vocabulary.size, generator=generator) * 3, bitmask)
        picked = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0].tolist()
        for i in list(live):
            token = picked[i]
            matchers[i].accept(token)
            if token != tokenizer.eos_id:
                out[i].append(token)
            if token == tokenizer.eos_id or matchers[i].is_finished:
                live.remove(i)
    assert not live, f"rows {live} still running after {MAX_STEPS} steps"
    return [tokenizer.decode(ids) for ids in out]


def decode_one(guide: Guide, tokenizer: Tokenizer, spec: GuideSpec, seed: int) -> str:
    """One request alone, masked through ``allowed()``."""
    matcher = guide.compile(spec)
    generator = torch.Generator().manual_seed(seed)
    ids = []
    for _ in range(MAX_STEPS):
        allowed = matcher.allowed()
        assert allowed.dtype == torch.bool and allowed.shape == (guide.vocabulary.size,) and allowed.any()
        logits = torch.randn(guide.vocabulary.size, generator=generator).masked_fill(~allowed, float("-inf"))
        token = int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))
        matcher.accept(token)
        if token == tokenizer.eos_id:
            return tokenizer.decode(ids)
        ids.append(token)
        if matcher.is_finished:
            return tokenizer.decode(ids)
    raise AssertionError(f"seed {seed}: no end after {MAX_STEPS} steps")


def is_person(value: object) -> bool:
    """``value`` is valid under :data:`PERSON` (checked by hand: keys, required keys, types and bounds)."""
    if not isinstance(value, dict) or not {"name", "age"} <= set(value) <= set(PERSON["properties"]):
        return False
    ok = isinstance(value["name"], str) and len(value["name"]) <= 6
    ok &= type(value["age"]) is int and 0 <= value["age"] <= 150
    tags = value.get("tags", [])
    ok &= isinstance(tags, list) and len(tags) <= 3 and all(t in ("red", "green", "blue") for t in tags)
    return ok and isinstance(value.get("admin", False), bool)


# -- the user's stories ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bpe", "unigram", "byte"])
def test_json_schema_output_parses_and_validates(guides, tokenizers, kind):
    texts = decode_batch(guides[kind], tokenizers[kind], GuideSpec("json_schema", PERSON))
    values = [json.loads(t) for t in texts]
    assert all(is_person(v) for v in values), [t for t, v in zip(texts, values) if not is_person(v)]
    assert len({json.dumps(v, sort_keys=True) for v in values}) > 1  # the mask is no single forced answer


def test_json_schema_from_response_format_alone_row_by_row(guides, tokenizers):
    spec = GuideSpec.from_response_format({"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}})
    for seed in range(SEEDS):
        text = decode_one(guides["bpe"], tokenizers["bpe"], spec, seed)
        assert is_person(json.loads(text)), text


def test_json_object_output_is_a_json_object(guides, tokenizers):
    texts = decode_batch(guides["bpe"], tokenizers["bpe"], GuideSpec.from_response_format({"type": "json_object"}))
    assert all(isinstance(json.loads(t), dict) for t in texts)


def test_compact_json_has_no_free_whitespace(registries, tokenizers):
    guide = build_guide(registries, {"name": "llguidance", "any_whitespace": False}, tokenizers["byte"])
    texts = decode_batch(guide, tokenizers["byte"], GuideSpec("json_schema", PERSON))
    for text in texts:
        value = json.loads(text)
        assert is_person(value)
        outside_strings = re.sub(r'"(\\.|[^"\\])*"', '""', text)
        assert not re.search(r"\s", outside_strings), text


@pytest.mark.parametrize("kind", ["bpe", "unigram", "byte"])
def test_regex_output_matches_the_whole_pattern(guides, tokenizers, kind):
    texts = decode_batch(guides[kind], tokenizers[kind], GuideSpec("regex", PRODUCT_CODE))
    assert all(re.fullmatch(PRODUCT_CODE, t) for t in texts), texts
    assert len(set(texts)) > 1


@pytest.mark.parametrize("kind", ["bpe", "unigram", "byte"])
def test_choice_output_is_one_of_the_choices(guides, tokenizers, kind):
    texts = decode_batch(guides[kind], tokenizers[kind], GuideSpec("choice", CHOICES))
    assert set(texts) <= set(CHOICES) and len(set(texts)) > 1, texts
    for seed in range(SEEDS):
        assert decode_one(guides[kind], tokenizers[kind], GuideSpec("choice", CHOICES), seed) in CHOICES


def test_lark_grammar_output_is_in_the_language(guides, tokenizers):
    texts = decode_batch(guides["bpe"], tokenizers["bpe"], GuideSpec("grammar", SUM_GRAMMAR))
    assert all(re.fullmatch(r"[0-9]{1,3}(\+[0-9]{1,3})*", t) for t in texts), texts


# -- the matcher's contract ------------------------------------------------------------------------------------
def test_eos_is_allowed_exactly_when_the_text_is_complete(guides, tokenizers):
    byte, guide = tokenizers["byte"], guides["byte"]
    exactly_two = guide.compile(GuideSpec("regex", "[0-9]{2}"))
    assert not exactly_two.allowed()[byte.EOS] and not exactly_two.is_finished
    exactly_two.accept(ord("4"))
    assert not exactly_two.allowed()[byte.EOS]
    exactly_two.accept(ord("2"))
    allowed = exactly_two.allowed()
    assert allowed[byte.EOS] and allowed.sum() == 1 and exactly_two.is_finished  # nothing can follow "42"
    some = guide.compile(GuideSpec("regex", "[0-9]+"))
    some.accept(ord("7"))
    allowed = some.allowed()
    assert allowed[byte.EOS] and allowed[ord("8")] and not some.is_finished  # complete, and may go on
    some.accept(byte.EOS)
    assert some.is_finished and some.error is None


def test_a_disallowed_token_is_refused_and_the_matcher_stays_usable(guides, tokenizers):
    byte, guide = tokenizers["byte"], guides["byte"]
    matcher = guide.compile(GuideSpec("choice", ["yes", "no"]))
    assert set(matcher.allowed().nonzero().flatten().tolist()) == {ord("y"), ord("n")}
    with pytest.raises(PlugformerError, match=r"token 120 \(b'x'\) is not allowed here by the choice constraint"):
        matcher.accept(ord("x"))
    with pytest.raises(PlugformerError, match="not allowed"):
        matcher.accept(byte.EOS)  # nothing complete yet
    with pytest.raises(PlugformerError, match="outside the vocabulary"):
        matcher.accept(10_000)
    for c in b"no":
        matcher.accept(c)
    assert matcher.is_finished and matcher.error is None


def test_special_tokens_never_spell_output(guides, tokenizers):
    for kind in ("bpe", "unigram", "byte"):
        tok, guide = tokenizers[kind], guides[kind]
        special = sorted(guide.vocabulary.special_ids - {tok.eos_id})
        assert {tok.pad_id, tok.mask_id} <= set(special)
        matcher = guide.compile(GuideSpec("grammar", "start: /(.|\\n)*/"))  # any text at all
        allowed = matcher.allowed()
        assert not allowed[special].any() and allowed[tok.eos_id], kind


def test_compiled_constraints_are_cached_and_each_request_gets_its_own_state(registries, tokenizers):
    guide = build_guide(registries, {"name": "llguidance", "cache_size": 2}, tokenizers["byte"])
    first = guide.compile(GuideSpec("json_schema", {"type": "object", "required": ["a"],
                                                    "properties": {"a": {"type": "integer"}}}))
    second = guide.compile(GuideSpec("json_schema", {"properties": {"a": {"type": "integer"}}, "required": ["a"],
                                                     "type": "object"}))  # same schema, other key order
    assert guide.cached == 1
    first.accept(ord("{"))
    assert second.allowed()[ord("{")] and not first.allowed()[ord("{")]
    guide.compile(GuideSpec("regex", "a"))
    guide.compile(GuideSpec("regex", "b"))
    assert guide.cached == 2  # least recently used dropped


def test_batched_fill_equals_each_rows_own_mask(guides, tokenizers):
    guide = guides["bpe"]
    rows = [guide.compile(GuideSpec("json_schema", PERSON)), None, guide.compile(GuideSpec("choice", CHOICES))]
    rows[0].accept(tokenizers["bpe"].encode("{")[0])
    bitmask = new_bitmask(3, guide.vocabulary.size)
    bitmask.zero_()
    guide.fill_bitmasks(rows, bitmask)
    unpacked = unpack_bitmask(bitmask, guide.vocabulary.size)
    assert torch.equal(unpacked[0], rows[0].allowed()) and torch.equal(unpacked[2], rows[2].allowed())
    assert unpacked[1].all()
    own = new_bitmask(1, guide.vocabulary.size)
    GuideMatcher.fill_bitmask(rows[2], own, 0)  # the generic path packs allowed() the same way
    assert torch.equal(own[0], bitmask[2])


def test_mask_logits_sets_disallowed_tokens_to_minus_infinity():
    allowed = torch.tensor([True, False, True] * 15)[:40]
    bitmask = new_bitmask(3, 40)  # row 2 stays unconstrained
    bitmask[0], bitmask[1] = pack_allowed(allowed), pack_allowed(torch.ones(40, dtype=torch.bool))
    assert torch.equal(unpack_bitmask(bitmask, 40)[0], allowed) and unpack_bitmask(bitmask, 40)[1:].all()
    logits = torch.randn(3, 40, generator=torch.Generator().manual_seed(0))
    masked = mask_logits(logits.clone(), bitmask)
    assert torch.equal(torch.isinf(masked[0]), ~allowed) and torch.equal(masked[0][allowed], logits[0][allowed])
    assert torch.equal(masked[1:], logits[1:])
    assert torch.equal(mask_logits(logits.clone(), new_bitmask(3, 40)), logits)  # nothing constrained
    with pytest.raises(PlugformerError, match="cannot mask logits"):
        mask_logits(torch.zeros(3, 65), bitmask)


# -- errors ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, problem", [
    (GuideSpec("json_schema", {"type": "objekt"}), "invalid json_schema: Invalid type: objekt"),
    (GuideSpec("json_schema", {"type": "string", "format": "shoe-size"}), "invalid json_schema: Unknown format"),
    (GuideSpec("regex", "[0-9"), "invalid regex: .*unclosed character class"),
    (GuideSpec("grammar", "start: foo bar"), 'invalid grammar: .*unknown name: "foo"'),
])
def test_a_bad_constraint_is_a_one_line_config_error(guides, spec, problem):
    with pytest.raises(ConfigError, match=f"guide 'llguidance': {problem}") as info:
        guides["byte"].compile(spec)
    assert "\n" not in str(info.value)


def test_specs_are_checked_when_made():
    for kind, value, problem in [
        ("xml", None, "kind 'xml' is not supported; valid kinds: json_schema, json_object, regex, choice, grammar"),
        ("json_schema", "[1, 2]", "json_schema needs the schema as a JSON object"),
        ("json_schema", {"enum": [{1, 2}]}, "json_schema is not plain JSON"),
        ("json_object", {"type": "object"}, "json_object takes no value"),
        ("choice", [], "choice needs a non-empty list of strings"),
        ("choice", "yes", "choice needs a non-empty list of strings"),
        ("choice", ["yes", 1], "every choice must be a string, got 1"),
        ("regex", "", "regex needs a non-empty string"),
        ("grammar", None, "grammar needs a non-empty string"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(problem)):
            GuideSpec(kind, value)
    spec = GuideSpec("choice", ["a", "b"])
    assert spec.value == ("a", "b") and spec == GuideSpec("choice", ("a", "b"))
    assert GuideSpec("json_schema", {"a": 1, "b": 2}).key() == GuideSpec("json_schema", {"b": 2, "a": 1}).key()
    schema = {"type": "object", "required": ["a"]}
    kept = GuideSpec("json_schema", schema)
    schema["required"].append("b")  # the caller's later edits do not reach the spec
    assert kept.value == {"type": "object", "required": ["a"]}
    assert len({GuideSpec("regex", "x"), GuideSpec("regex", "x"), GuideSpec("choice", ["x"])}) == 2


def test_response_format_maps_to_a_spec():
    assert GuideSpec.from_response_format({"type": "text"}) is None
    assert GuideSpec.from_response_format({"type": "json_object"}) == GuideSpec("json_object")
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    spec = GuideSpec.from_response_format({"type": "json_schema", "json_schema": {"name": "a", "strict": True,
                                                                                  "schema": schema}})
    assert spec == GuideSpec("json_schema", schema)
    for bad, problem in [
        ("json", "response_format must be an object with a 'type', got str"),
        ({}, "response_format.type None is not supported; valid types: text, json_object, json_schema"),
        ({"type": "xml"}, "response_format.type 'xml' is not supported"),
        ({"type": "json_schema"}, "response_format.json_schema must be an object"),
        ({"type": "json_schema", "json_schema": {"name": "a"}}, "response_format.json_schema.schema is missing"),
        ({"type": "json_schema", "json_schema": {"schema": "{}"}},
         "response_format.json_schema.schema must be a JSON Schema object, got str"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(problem)) as info:
            GuideSpec.from_response_format(bad)
        assert "\n" not in str(info.value)


def test_guide_options_are_checked_when_built(registries, tokenizers):
    with pytest.raises(ConfigError, match=r"guide.cache_size=0 must be in \[1, 65536\]"):
        build_guide(registries, {"name": "llguidance", "cache_size": 0}, tokenizers["byte"])
    with pytest.raises(ConfigError, match="guide 'llguidance' has no option 'whitespace'"):
        build_guide(registries, {"name": "llguidance", "whitespace": "any"}, tokenizers["byte"])
    guide = build_guide(registries, {"name": "llguidance", "threads": 2}, tokenizers["byte"])
    assert guide.config.threads == 2 and len(decode_batch(guide, tokenizers["byte"], GuideSpec("regex", "[ab]{3}"),
                                                          seeds=4)) == 4


def test_a_tokenizer_that_cannot_spell_its_tokens_makes_structured_output_unavailable(registries, tokenizers):
    class Opaque(ByteTokenizer):
        def token_bytes(self) -> list[bytes]:
            return Tokenizer.token_bytes(self)

    with pytest.raises(PlugformerError, match="tokenizer Opaque does not expose its token bytes, so structured "
                                              "output is unavailable"):
        build_guide(registries, "llguidance", Opaque(None))


def test_a_wider_model_vocabulary_gets_never_allowed_extra_ids(registries, tokenizers):
    guide = build_guide(registries, "llguidance", tokenizers["byte"], vocab_size=300)
    assert guide.vocabulary.size == 300 and set(range(259, 300)) <= guide.vocabulary.special_ids
    allowed = guide.compile(GuideSpec("grammar", "start: /(.|\\n)*/")).allowed()
    assert allowed.shape == (300,) and not allowed[259:].any()
    with pytest.raises(PlugformerError, match="cannot cover the tokenizer's 259 ids"):
        Vocabulary.of(tokenizers["byte"], vocab_size=100)


def test_a_missing_llguidance_is_reported_with_the_install_command(registries, tokenizers, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llguidance" else real(name, *a))
    entry = registries.guide.get("llguidance")
    assert entry.availability() == (False, "llguidance is not installed (pip install 'plugformer[guide]')")
    with pytest.raises(UnavailableError, match=r"guide 'llguidance' is unavailable: llguidance is not installed "
                                               r"\(pip install 'plugformer\[guide\]'\)"):
        build_guide(registries, "llguidance", tokenizers["byte"])
