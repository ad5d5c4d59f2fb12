"""Guide (structured output) contract, on a kit-local vocabulary (the 256 single bytes, some multi-byte
tokens that straddle JSON syntax, an eos and a pad): every output a decoder sampling from random logits
(on each declared device) produces under the guide's masks, batched the way the engine calls it, parses
and follows its constraint, for each spec kind the guide declares (capability ``kinds``; all kinds when it
declares none); eos is allowed exactly when the text is complete; a disallowed token is refused and leaves
the matcher usable; special ids never spell text; ``allowed()`` agrees with the batched bitmask; and a bad
regex, schema or grammar is a one-line ConfigError."""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

from plugformer.errors import ConfigError, PlugformerError
from plugformer.interfaces import Guide, GuideMatcher, GuideSpec, Vocabulary, mask_logits, new_bitmask
from plugformer.interfaces.guide import GUIDE_KINDS, unpack_bitmask
from plugformer.registry import Entry
from plugformer.testing.construct import build, devices, label

contract = pytest.mark.plugformer_contract

#: multi-byte tokens, so masks must reason about tokens that cross syntax boundaries (`{"`, `":`, `1,`)
WORDS = [b'{"', b'":', b'",', b'"}', b"1,", b", ", b"true", b"false", b"null", b"ye", b"es", b"no", b"maybe",
         b" later", b"\xe6\x95\xb0", b"ab", b"-1", b"12", b"+1"]
EOS, PAD = 256 + len(WORDS), 257 + len(WORDS)
SEEDS = 8
MAX_STEPS = 3000

SCHEMA = {"type": "object", "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                                           "ok": {"type": "boolean"},
                                           "tags": {"type": "array", "items": {"enum": ["ab", "cd"]}, "maxItems": 2}},
          "required": ["id", "ok"], "additionalProperties": False}
CHOICES = ["yes", "no", "maybe later", "数"]


def _follows_schema(text: str) -> bool:
    value = json.loads(text)
    return (isinstance(value, dict) and {"id", "ok"} <= set(value) <= {"id", "ok", "tags"}
            and type(value["id"]) is int and 0 <= value["id"] <= 999 and isinstance(value["ok"], bool)
            and all(t in ("ab", "cd") for t in value.get("tags", [])) and len(value.get("tags", [])) <= 2)


#: kind → (spec, does an output follow it)
CASES: dict[str, tuple[GuideSpec, Callable[[str], bool]]] = {
    "json_schema": (GuideSpec("json_schema", SCHEMA), _follows_schema),
    "json_object": (GuideSpec("json_object"), lambda text: isinstance(json.loads(text), dict)),
    "regex": (GuideSpec("regex", r"[a-z]{2,4}-[0-9]{1,3}"), lambda text: bool(re.fullmatch(r"[a-z]{2,4}-[0-9]{1,3}",
                                                                                             text))),
    "choice": (GuideSpec("choice", CHOICES), lambda text: text in CHOICES),
    "grammar": (GuideSpec("grammar", 'start: term ("+" term)*\nterm: /[0-9]{1,2}/'),
                lambda text: bool(re.fullmatch(r"[0-9]{1,2}(\+[0-9]{1,2})*", text))),
}


def kit_vocabulary() -> Vocabulary:
    """The kit's vocabulary: ids 0-255 the bytes, then :data:`WORDS`, then eos and a pad (special)."""
    return Vocabulary(tuple(bytes([b]) for b in range(256)) + tuple(WORDS) + (b"<eos>", b"<pad>"), EOS,
                      frozenset({EOS, PAD}))


def kit_guide(entry: Entry) -> Guide:
    guide = build(entry, kit_vocabulary())
    assert isinstance(guide, Guide), f"{label(entry)}: builds a {type(guide).__name__}, not a Guide"
    return guide


def declared_kinds(entry: Entry) -> list[str]:
    kinds = list(entry.capabilities.get("kinds", GUIDE_KINDS))
    unknown = [k for k in kinds if k not in GUIDE_KINDS]
    assert not unknown, f"{label(entry)}: declares unknown kinds {unknown}; kinds are {', '.join(GUIDE_KINDS)}"
    return kinds


def text_of(ids: list[int]) -> str:
    vocabulary = kit_vocabulary()
    return b"".join(vocabulary.token_bytes[i] for i in ids).decode("utf-8")


def sample_batch(guide: Guide, spec: GuideSpec, what: str, device: str = "cpu") -> list[str]:
    """:data:`SEEDS` rows decoded together from random logits (on ``device``) under the guide's masks, as the
    engine does."""
    matchers = [guide.compile(spec) for _ in range(SEEDS)]
    out: list[list[int]] = [[] for _ in range(SEEDS)]
    live = set(range(SEEDS))
    bitmask = new_bitmask(SEEDS, guide.vocabulary.size)
    generator = torch.Generator().manual_seed(0)
    for _ in range(MAX_STEPS):
        if not live:
            return [text_of(ids) for ids in out]
        guide.fill_bitmasks([m if i in live else None for i, m in enumerate(matchers)], bitmask)
        logits = torch.randn(SEEDS, guide.vocabulary.size, generator=generator).to(device) * 3
        logits = mask_logits(logits, bitmask).float().cpu()
        picked = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0].tolist()
        for i in sorted(live):
            matchers[i].accept(picked[i])
            if picked[i] != EOS:
                out[i].append(picked[i])
            if picked[i] == EOS or matchers[i].is_finished:
                live.discard(i)
    raise AssertionError(f"{what}: rows {sorted(live)} never finished in {MAX_STEPS} steps")


@contract("guide")
def test_every_sampled_output_follows_the_constraint(entry: Entry) -> None:
    guide = kit_guide(entry)
    for device, kind in ((d, k) for d in devices(entry) for k in declared_kinds(entry)):
        spec, follows = CASES[kind]
        what = label(entry, device=device, kind=kind)
        for text in sample_batch(guide, spec, what, device):
            try:
                ok = follows(text)
            except ValueError as exc:  # json.loads
                ok, text = False, f"{text!r} ({exc})"
            assert ok, f"{what}: sampled under the mask, {text!r} does not follow {spec.value!r}"


@contract("guide")
def test_eos_is_allowed_exactly_when_the_text_is_complete(entry: Entry) -> None:
    guide, what = kit_guide(entry), label(entry)
    if "regex" not in declared_kinds(entry):
        pytest.skip(f"{what} does not declare regex")
    matcher = guide.compile(GuideSpec("regex", "[0-9]{2}"))
    assert isinstance(matcher, GuideMatcher), f"{what}: compile() returns a {type(matcher).__name__}"
    assert not matcher.allowed()[EOS], f"{what}: eos allowed before any digit of [0-9]{{2}}"
    matcher.accept(ord("4"))
    assert not matcher.allowed()[EOS] and not matcher.is_finished, f"{what}: eos allowed after one digit of [0-9]{{2}}"
    matcher.accept(ord("2"))
    allowed = matcher.allowed()
    assert allowed[EOS] and int(allowed.sum()) == 1, f"{what}: after '42' only eos may follow, got " \
                                                     f"{allowed.nonzero().flatten().tolist()}"
    assert matcher.is_finished, f"{what}: not finished after '42' for [0-9]{{2}}"


@contract("guide")
def test_a_disallowed_token_is_refused(entry: Entry) -> None:
    guide, what = kit_guide(entry), label(entry)
    if "choice" not in declared_kinds(entry):
        pytest.skip(f"{what} does not declare choice")
    matcher = guide.compile(GuideSpec("choice", ["yes", "no"]))
    for bad in (ord("x"), EOS, PAD):
        with pytest.raises(PlugformerError):
            matcher.accept(bad)
    for token in (ord("n"), ord("o")):  # the refusals left the matcher where it was
        assert matcher.allowed()[token], f"{what}: after refused tokens, {chr(token)!r} is no longer allowed"
        matcher.accept(token)
    assert matcher.is_finished and matcher.error is None, f"{what}: 'no' does not finish choice ['yes', 'no']"


@contract("guide")
def test_special_ids_never_spell_text_and_masks_agree(entry: Entry) -> None:
    guide, what = kit_guide(entry), label(entry)
    matchers = [guide.compile(CASES[kind][0]) for kind in declared_kinds(entry)]
    bitmask = new_bitmask(len(matchers), guide.vocabulary.size)
    bitmask.zero_()
    guide.fill_bitmasks(matchers, bitmask)
    batched = unpack_bitmask(bitmask, guide.vocabulary.size)
    for row, matcher in enumerate(matchers):
        allowed = matcher.allowed()
        assert allowed.dtype == torch.bool and tuple(allowed.shape) == (guide.vocabulary.size,), \
            f"{what}: allowed() is {allowed.dtype} {tuple(allowed.shape)}, not bool ({guide.vocabulary.size},)"
        assert not allowed[PAD], f"{what}: the special pad id is allowed as text"
        assert torch.equal(batched[row], allowed), f"{what}: fill_bitmasks row {row} differs from allowed()"


@contract("guide")
def test_a_bad_constraint_is_a_one_line_config_error(entry: Entry) -> None:
    guide, what = kit_guide(entry), label(entry)
    bad: dict[str, Any] = {"regex": "[0-9", "json_schema": {"type": "objekt"}, "grammar": "start: undefined_rule"}
    for kind in (k for k in declared_kinds(entry) if k in bad):
        with pytest.raises(ConfigError) as info:
            guide.compile(GuideSpec(kind, bad[kind]))
        assert "\n" not in str(info.value), f"{what}: the error for a bad {kind} spans lines: {info.value}"
