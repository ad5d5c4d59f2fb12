"""Guides: structured output. A per-row token mask, recomputed every decoding step, that keeps the generated
text inside a JSON schema, a regular expression, a list of choices or a grammar.

The pieces, in the order the engine uses them:

- :class:`GuideSpec`: what a request asks for (``kind`` and ``value``), e.g. from OpenAI's ``response_format``;
- :class:`Vocabulary`: the bytes every token id spells, built once per tokenizer (:meth:`Vocabulary.of`);
- :class:`Guide`: a backend (the ``guide`` family, e.g. ``llguidance``), built once per model as
  ``Cls(config, vocabulary)`` (:func:`build_guide` does it from a tokenizer); :meth:`Guide.compile` turns a
  spec into a fresh :class:`GuideMatcher`;
- :class:`GuideMatcher`: one request's state: the tokens allowed next, advanced by each sampled token;
- the bitmask helpers (:func:`new_bitmask`, :meth:`Guide.fill_bitmasks`, :func:`mask_logits`): a whole batch's
  masks as one ``int32`` tensor of packed bits (bit ``j`` of word ``w`` of a row is token ``32 * w + j``), the
  layout grammar libraries fill natively, applied to the logits in place.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import Tensor

from plugformer.errors import ConfigError, PlugformerError, UnavailableError

if TYPE_CHECKING:
    from plugformer.interfaces.tokenizer import Tokenizer
    from plugformer.registry import Registries

GuideKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]
#: every kind of :class:`GuideSpec`, in documentation order
GUIDE_KINDS: tuple[str, ...] = get_args(GuideKind)
#: OpenAI ``response_format`` types :meth:`GuideSpec.from_response_format` understands
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")
#: bits per word of a packed bitmask
BITS = 32


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters: error messages stay one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class GuideSpec:
    """What a request constrains its output to.

    ``kind`` and ``value``:

    - ``json_schema``: ``value`` is a JSON Schema (a dict); the output is one JSON value valid under it;
    - ``json_object``: ``value`` is None; the output is any JSON object;
    - ``regex``: ``value`` is a regular expression (str) the whole output must match;
    - ``choice``: ``value`` is a non-empty list of strings; the output is exactly one of them;
    - ``grammar``: ``value`` is a context-free grammar in Lark syntax (str), starting at ``start``.

    The shape of ``value`` is checked here (a :class:`~plugformer.errors.ConfigError` naming the field);
    whether a schema, regex or grammar is valid is checked when a :class:`Guide` compiles it. ``choice``
    values are stored as a tuple.
    """

    kind: GuideKind
    value: Any = None

    def __post_init__(self) -> None:
        if self.kind not in GUIDE_KINDS:
            raise ConfigError(f"structured output kind {self.kind!r} is not supported; valid kinds: "
                              f"{', '.join(GUIDE_KINDS)}")
        value = self.value
        if self.kind == "json_schema":
            if not isinstance(value, dict):
                raise ConfigError(f"structured output json_schema needs the schema as a JSON object (a dict), "
                                  f"got {type(value).__name__}")
            try:  # a private plain-JSON copy: the caller's later edits cannot change a spec (or its key)
                object.__setattr__(self, "value", json.loads(json.dumps(value)))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"structured output json_schema is not plain JSON: {exc}") from None
        elif self.kind == "json_object":
            if value is not None:
                raise ConfigError(f"structured output json_object takes no value, got {type(value).__name__}")
        elif self.kind == "choice":
            if isinstance(value, str) or not isinstance(value, Sequence) or not value:
                raise ConfigError(f"structured output choice needs a non-empty list of strings, got {_short(value)}")
            bad = [c for c in value if not isinstance(c, str)]
            if bad:
                raise ConfigError(f"structured output choice: every choice must be a string, got {_short(bad[0])}")
            object.__setattr__(self, "value", tuple(value))
        elif not isinstance(value, str) or not value:
            raise ConfigError(f"structured output {self.kind} needs a non-empty string, got {_short(value)}")

    @classmethod
    def from_response_format(cls, obj: Any) -> GuideSpec | None:
        """The spec for an OpenAI ``response_format`` object; None for ``{"type": "text"}`` (unconstrained).

        ``{"type": "json_object"}`` is any JSON object; ``{"type": "json_schema", "json_schema": {"name": ...,
        "schema": {...}}}`` is output valid under ``schema`` (``name``, ``description`` and ``strict`` are
        accepted and not used). Anything else is a one-line ConfigError naming the bad field.
        """
        if not isinstance(obj, Mapping):
            raise ConfigError(f"response_format must be an object with a 'type', got {type(obj).__name__}")
        kind = obj.get("type")
        if kind not in RESPONSE_FORMAT_TYPES:
            raise ConfigError(f"response_format.type {kind!r} is not supported; valid types: "
                              f"{', '.join(RESPONSE_FORMAT_TYPES)}")
        if kind == "text":
            return None
        if kind == "json_object":
            return cls("json_object")
        inner = obj.get("json_schema")
        if not isinstance(inner, Mapping):
            raise ConfigError("response_format.json_schema must be an object holding 'name' and 'schema', got "
                              f"{type(inner).__name__}")
        if "schema" not in inner:
            raise ConfigError("response_format.json_schema.schema is missing: the JSON Schema the output must follow")
        schema = inner["schema"]
        if not isinstance(schema, Mapping):
            raise ConfigError(f"response_format.json_schema.schema must be a JSON Schema object, "
                              f"got {type(schema).__name__}")
        return cls("json_schema", dict(schema))

    def key(self) -> str:
        """A stable string equal exactly for equal specs (key order in a schema does not matter): what a
        :class:`Guide` caches compiled grammars by."""
        value = list(self.value) if isinstance(self.value, tuple) else self.value
        return json.dumps([self.kind, value], sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def __hash__(self) -> int:
        return hash(self.key())


@dataclass(frozen=True)
class Vocabulary:
    """What a guide must know of a tokenizer: the bytes each id spells, and which ids spell no text.

    ``token_bytes[i]`` is what id ``i`` adds to the decoded output (for a special token: its spelling, which
    a guide never lets stand for text); ``special_ids`` are the ids that are not text (eos, pad, mask,
    unknown, control tokens, ids past the tokenizer's vocabulary); ``eos_id`` ends a completed output.
    """

    token_bytes: tuple[bytes, ...]
    eos_id: int
    special_ids: frozenset[int]

    def __post_init__(self) -> None:
        if not 0 <= self.eos_id < len(self.token_bytes):
            raise PlugformerError(f"vocabulary: eos id {self.eos_id} is outside 0..{len(self.token_bytes) - 1}")

    @property
    def size(self) -> int:
        """Number of ids: the width of every mask and of the logits a mask applies to."""
        return len(self.token_bytes)

    @classmethod
    def of(cls, tokenizer: Tokenizer, vocab_size: int | None = None) -> Vocabulary:
        """The vocabulary of ``tokenizer`` (its :meth:`~plugformer.interfaces.Tokenizer.token_bytes` and
        :meth:`~plugformer.interfaces.Tokenizer.special_token_ids`), widened to ``vocab_size`` ids when the
        model's logits are wider than the tokenizer's vocabulary (the extra ids are special: never allowed).

        Raises a :class:`~plugformer.errors.PlugformerError` when the tokenizer cannot say what its tokens
        spell (structured output is then unavailable with it).
        """
        spelled = [bytes(b) for b in tokenizer.token_bytes()]
        own = int(tokenizer.vocab_size)
        if len(spelled) != own:
            raise PlugformerError(f"tokenizer {type(tokenizer).__name__}: token_bytes() gives {len(spelled)} "
                                  f"entries for a vocabulary of {own}")
        size = own if vocab_size is None else int(vocab_size)
        if size < own:
            raise PlugformerError(f"vocabulary: the model's {size} logits cannot cover the tokenizer's {own} ids")
        special = {int(i) for i in tokenizer.special_token_ids()} | set(range(own, size))
        return cls(tuple(spelled) + (b"",) * (size - own), int(tokenizer.eos_id), frozenset(special))


class GuideMatcher(ABC):
    """One request's position in its constraint: which tokens may come next, advanced token by token.

    ``allowed()`` includes ``eos_id`` exactly when the text so far is a complete output. Once
    :attr:`is_finished` is True nothing but eos can follow, and the engine stops the row with finish
    reason ``stop``. A matcher the backend cannot continue (a library limit hit mid-request) reports why in
    :attr:`error` and behaves as finished.
    """

    def __init__(self, vocabulary: Vocabulary):
        self.vocabulary = vocabulary

    @abstractmethod
    def allowed(self) -> Tensor:
        """A CPU bool tensor of shape ``(vocabulary.size,)``: True for each token allowed next."""

    @abstractmethod
    def accept(self, token_id: int) -> None:
        """Advance past ``token_id``; raises a :class:`~plugformer.errors.PlugformerError` (and stays where
        it was) if the token was not allowed."""

    @property
    @abstractmethod
    def is_finished(self) -> bool:
        """True when nothing can follow: the output is complete (eos accepted, or the constraint admits no
        longer text) or the matcher failed (see :attr:`error`)."""

    @property
    def error(self) -> str | None:
        """Why the backend cannot continue this request (None while it can)."""
        return None

    def fill_bitmask(self, bitmask: Tensor, row: int) -> None:
        """Write :meth:`allowed` packed into ``bitmask[row]`` (a CPU ``int32`` tensor from
        :func:`new_bitmask`). Backends whose library writes packed masks natively override this fast path."""
        bitmask[row] = pack_allowed(self.allowed())


class Guide(ABC):
    """A structured-output backend: compiles :class:`GuideSpec` objects into matchers for one vocabulary.

    Construction: ``Cls(config, vocabulary)``, once per model (:func:`build_guide` builds it from a
    tokenizer through the ``guide`` registry). :meth:`compile` is called once per request; implementations
    cache what compiling costs by :meth:`GuideSpec.key`, so requests repeating a schema start at once.
    """

    def __init__(self, config: Any, vocabulary: Vocabulary):
        self.config = config
        self.vocabulary = vocabulary

    @abstractmethod
    def compile(self, spec: GuideSpec) -> GuideMatcher:
        """A fresh matcher at the start of ``spec``'s output. An invalid schema, regex or grammar is a one-line
        :class:`~plugformer.errors.ConfigError` naming the problem."""

    def fill_bitmasks(self, matchers: Sequence[GuideMatcher | None], bitmask: Tensor) -> None:
        """Row ``i`` of ``bitmask`` (from :func:`new_bitmask`) ← the tokens ``matchers[i]`` allows next; a
        None matcher (an unconstrained row) allows everything. Backends may override it to compute the rows
        in parallel."""
        for row, matcher in enumerate(matchers):
            if matcher is None:
                bitmask[row] = -1
            else:
                matcher.fill_bitmask(bitmask, row)


# -- packed bitmasks ------------------------------------------------------------------------------------------
def bitmask_words(vocab_size: int) -> int:
    """``int32`` words per row of a bitmask over ``vocab_size`` ids."""
    return (int(vocab_size) + BITS - 1) // BITS


def new_bitmask(rows: int, vocab_size: int) -> Tensor:
    """A CPU ``int32`` bitmask of shape ``(rows, bitmask_words(vocab_size))`` allowing every token; reuse it
    across steps (every fill overwrites whole rows)."""
    return torch.full((int(rows), bitmask_words(vocab_size)), -1, dtype=torch.int32)


_SHIFTS = torch.arange(BITS, dtype=torch.int32)


def pack_allowed(allowed: Tensor) -> Tensor:
    """A bool ``(V,)`` mask as one bitmask row (``int32``, ``bitmask_words(V)`` words)."""
    bits = allowed.to(device="cpu", dtype=torch.int64).flatten()
    padded = torch.zeros(bitmask_words(bits.numel()) * BITS, dtype=torch.int64)
    padded[:bits.numel()] = bits
    words = (padded.view(-1, BITS) << _SHIFTS.to(torch.int64)).sum(dim=1)
    return torch.where(words >= 1 << 31, words - (1 << 32), words).to(torch.int32)


def unpack_bitmask(bitmask: Tensor, vocab_size: int) -> Tensor:
    """A bitmask ``(rows, words)`` as bool ``(rows, vocab_size)``, on the bitmask's device."""
    shifts = _SHIFTS.to(bitmask.device)
    bits = (bitmask.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab_size].bool()


def mask_logits(logits: Tensor, bitmask: Tensor) -> Tensor:
    """Set ``logits[i, t]`` to ``-inf`` wherever row ``i`` of ``bitmask`` disallows token ``t``, in place, and
    return ``logits`` (``(rows, V)`` on any device; ``V`` at most the bitmask's ``32 * words``). Apply it
    before anything that renormalises over tokens (top-k, top-p, min-p), so those choose among allowed
    tokens only."""
    rows, width = logits.shape
    if bitmask.shape[0] != rows or width > bitmask.shape[1] * BITS:
        raise PlugformerError(f"bitmask of shape {tuple(bitmask.shape)} cannot mask logits of shape "
                              f"{tuple(logits.shape)}")
    constrained = (bitmask != -1).any(dim=1).nonzero().flatten()  # rows allowing everything cost nothing
    if constrained.numel() == 0:
        return logits
    # index_select copies: the caller may refill the bitmask while the logits are still being masked
    words = bitmask.index_select(0, constrained).to(logits.device)
    allowed = unpack_bitmask(words, width)
    index = constrained.to(logits.device)
    logits.index_copy_(0, index, logits.index_select(0, index).masked_fill_(~allowed, float("-inf")))
    return logits


def build_guide(registries: Registries, node: str | Mapping[str, Any], tokenizer: Tokenizer, *,
                vocab_size: int | None = None) -> Guide:
    """The guide named by ``node`` (a name, or a config node with ``name`` and options) for ``tokenizer``'s
    vocabulary, widened to the model's ``vocab_size`` logits if that is larger. An option out of its range is a
    :class:`~plugformer.errors.ConfigError`, an unavailable backend an
    :class:`~plugformer.errors.UnavailableError` saying how to install it; a tokenizer that cannot spell its
    tokens a :class:`~plugformer.errors.PlugformerError` saying structured output is unavailable with it."""
    import dataclasses

    from plugformer.build import build, component_config
    from plugformer.config.ranges import field_range

    name = node if isinstance(node, str) else node.get("name")
    entry = registries.guide.get(name)
    config = component_config(entry, {} if isinstance(node, str) else node)
    for f in dataclasses.fields(config) if config is not None else ():  # what compose-time validation checks
        problem = field_range(f).problem(f"guide.{f.name}", getattr(config, f.name)) if field_range(f) else None
        if problem:
            raise ConfigError(problem)
    ok, reason = entry.availability()
    if not ok:
        raise UnavailableError(f"guide '{name}' is unavailable: {reason}")
    return build(registries, "guide", node, Vocabulary.of(tokenizer, vocab_size))


__all__ = ["GUIDE_KINDS", "Guide", "GuideKind", "GuideMatcher", "GuideSpec", "Vocabulary", "bitmask_words",
           "build_guide", "mask_logits", "new_bitmask", "pack_allowed", "unpack_bitmask"]
