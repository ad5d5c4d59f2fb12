"""The ``llguidance`` guide: :class:`~plugformer.interfaces.Guide` on the llguidance grammar library.

llguidance compiles a JSON schema, regex or Lark grammar into a lexer plus an Earley parser and walks a
trie of the vocabulary's token bytes to compute, per step, the tokens that keep the output a prefix of
something the constraint accepts. It writes masks as packed ``int32`` bitmasks, the layout of
:func:`plugformer.interfaces.new_bitmask`, so :meth:`LLGuidanceMatcher.fill_bitmask` is the fast path and
:meth:`LLGuidance.fill_bitmasks` computes a batch's rows in parallel (``LLExecutor``, without the GIL).

The library's ``llguidance.torch`` helpers are thin wrappers over the same calls (``unsafe_compute_mask_ptr``
on a row's memory); they are not imported because that module compiles a kernel with ``torch.compile`` at
import time (seconds), and :func:`plugformer.interfaces.mask_logits` applies the masks instead.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from plugformer import ConfigError, PlugformerError, UnavailableError
from plugformer.interfaces import Guide, GuideMatcher, GuideSpec, Vocabulary, bitmask_words, new_bitmask, unpack_bitmask
from plugformer_guide.availability import llguidance_available
from plugformer_guide.schemas import LLGuidanceConfig

#: marks a special token's bytes for llguidance (it never lets such a token spell text)
SPECIAL_MARK = b"\xff"
#: lines of a library error that only draw a caret under the source (dropped from one-line messages)
_DRAWING = re.compile(r"^\s*(\^+|\d+ \|.*|<non-verbose/>)\s*$")


def one_line(message: str) -> str:
    """A library error message as one line: the source drawings dropped, the rest joined by spaces."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip() and not _DRAWING.match(ln)]
    return " ".join(lines) or "unknown error"


class _VocabularyTokenizer:
    """What ``llguidance.TokenizerWrapper`` reads: the token bytes (special ones marked), eos and the
    special ids, and an encoder for text the library tokenizes itself (forced prefixes). ``encode`` is
    the tokenizer's own when given; otherwise the library's greedy tokenization over the vocabulary."""

    bos_token_id = None

    def __init__(self, vocabulary: Vocabulary):
        self.eos_token_id = vocabulary.eos_id
        self.special_token_ids = sorted(vocabulary.special_ids)
        self.tokens = [SPECIAL_MARK + b if i in vocabulary.special_ids else b
                       for i, b in enumerate(vocabulary.token_bytes)]
        self._by_bytes: dict[bytes, int] | None = None

    def __call__(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise TypeError("encodes str")  # TokenizerWrapper probes with bytes, then falls back to str
        return self._greedy(text)

    def _greedy(self, text: str) -> list[int]:
        """Longest-match tokenization of ``text`` over the non-special tokens (only used for prefixes the
        library forces; any tokenization the vocabulary can spell is valid for the parser)."""
        data, out, i = text.encode("utf-8"), [], 0
        index = self._index()
        longest = max(map(len, index), default=1)
        while i < len(data):
            for n in range(min(longest, len(data) - i), 0, -1):
                tok = index.get(data[i:i + n])
                if tok is not None:
                    out.append(tok)
                    i += n
                    break
            else:
                raise ValueError(f"the vocabulary cannot spell byte {data[i]:#04x}")
        return out

    def _index(self) -> dict[bytes, int]:
        """Bytes → the first non-special id spelling them (built on first use)."""
        if self._by_bytes is None:
            self._by_bytes = {}
            for i, b in enumerate(self.tokens):
                if b and not b.startswith(SPECIAL_MARK):
                    self._by_bytes.setdefault(b, i)
        return self._by_bytes


class LLGuidanceMatcher(GuideMatcher):
    """One request's ``llguidance.LLMatcher``. ``allowed()`` includes eos exactly when the output so far is
    complete; :attr:`is_finished` is the library's "stopped" state (no byte can follow, eos accepted, or an
    error, reported in :attr:`error`)."""

    def __init__(self, vocabulary: Vocabulary, matcher: Any, spec: GuideSpec):
        super().__init__(vocabulary)
        self._matcher = matcher
        self.spec = spec

    @property
    def matcher(self) -> Any:
        """The underlying ``llguidance.LLMatcher`` (for the batched fill)."""
        return self._matcher

    def allowed(self) -> Tensor:
        bitmask = new_bitmask(1, self.vocabulary.size)
        self.fill_bitmask(bitmask, 0)
        return unpack_bitmask(bitmask, self.vocabulary.size)[0]

    def fill_bitmask(self, bitmask: Tensor, row: int) -> None:
        """The library writes the row's packed bits directly into ``bitmask[row]`` (CPU, ``int32``,
        contiguous, ``bitmask_words(vocabulary.size)`` words per row)."""
        target = _checked_row(bitmask, row, self.vocabulary.size)
        self._matcher.unsafe_compute_mask_ptr(target.data_ptr(), target.numel() * target.element_size())

    def accept(self, token_id: int) -> None:
        token_id = int(token_id)
        if not 0 <= token_id < self.vocabulary.size:
            raise PlugformerError(f"structured output: token {token_id} is outside the vocabulary "
                                  f"(0..{self.vocabulary.size - 1})")
        if self._matcher.validate_tokens([token_id]) != 1:  # checks without entering the error state
            raise PlugformerError(f"structured output: token {token_id} "
                                  f"({self.vocabulary.token_bytes[token_id]!r}) is not allowed here by the "
                                  f"{self.spec.kind} constraint")
        if not self._matcher.consume_token(token_id):
            raise PlugformerError(f"structured output: {one_line(self._matcher.get_error())}")

    @property
    def is_finished(self) -> bool:
        return bool(self._matcher.is_stopped())

    @property
    def error(self) -> str | None:
        return one_line(self._matcher.get_error()) if self._matcher.is_error() else None


def _checked_row(bitmask: Tensor, row: int, vocab_size: int) -> Tensor:
    """``bitmask[row]``, after checking it is memory the library may write a ``vocab_size`` mask into."""
    import torch

    if bitmask.dtype != torch.int32 or bitmask.device.type != "cpu" or bitmask.dim() != 2 \
            or bitmask.shape[1] != bitmask_words(vocab_size) or not bitmask.is_contiguous():
        raise PlugformerError(f"structured output: the bitmask must be a contiguous CPU int32 tensor of shape "
                              f"(rows, {bitmask_words(vocab_size)}) (see new_bitmask), got "
                              f"{bitmask.dtype} {tuple(bitmask.shape)} on {bitmask.device}")
    return bitmask[row]


class LLGuidance(Guide):
    """Compiles specs with llguidance for one :class:`~plugformer.interfaces.Vocabulary`.

    Every kind is supported: ``json_schema`` (llguidance's JSON Schema subset; unsupported keywords are
    errors, not silently ignored), ``json_object``, ``regex`` (Rust ``regex`` syntax, whole output),
    ``choice`` and ``grammar`` (Lark syntax, llguidance dialect). A compiled constraint is kept (up to
    ``cache_size``, least recently used dropped first) and each request gets a copy of it.
    """

    def __init__(self, config: LLGuidanceConfig | None, vocabulary: Vocabulary):
        super().__init__(config if config is not None else LLGuidanceConfig(), vocabulary)
        ok, reason = llguidance_available()
        if not ok:
            raise UnavailableError(f"guide 'llguidance' is unavailable: {reason}")
        import llguidance

        self._llg = llguidance
        self._tokenizer = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_VocabularyTokenizer(vocabulary)))
        self._limits = llguidance.LLParserLimits(verbose_errors=False)
        self._compiled: OrderedDict[str, Any] = OrderedDict()
        self._executor: Any = None

    def grammar(self, spec: GuideSpec) -> str:
        """llguidance's grammar text for ``spec`` (not yet checked)."""
        LLMatcher = self._llg.LLMatcher
        json_options = {"whitespace_flexible": bool(self.config.any_whitespace)}
        if spec.kind in ("json_schema", "json_object"):
            schema = spec.value if spec.kind == "json_schema" else {"type": "object"}
            try:
                return LLMatcher.grammar_from_json_schema(schema, defaults=json_options)
            except ValueError as exc:
                raise ConfigError(f"guide 'llguidance': invalid json_schema: {one_line(str(exc))}") from None
        if spec.kind == "regex":
            return LLMatcher.grammar_from_regex(spec.value)
        if spec.kind == "choice":
            return self._llg.grammar_from("choice", list(spec.value))
        return LLMatcher.grammar_from_lark(spec.value)

    def _template(self, spec: GuideSpec) -> Any:
        """The compiled, never-advanced matcher for ``spec`` (cached by ``spec.key()``)."""
        key = spec.key()
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        matcher = self._llg.LLMatcher(self._tokenizer, self.grammar(spec), log_level=0, limits=self._limits)
        if matcher.is_error():
            raise ConfigError(f"guide 'llguidance': invalid {spec.kind}: {one_line(matcher.get_error())}")
        self._compiled[key] = matcher
        while len(self._compiled) > int(self.config.cache_size):
            self._compiled.popitem(last=False)
        return matcher

    def compile(self, spec: GuideSpec) -> LLGuidanceMatcher:
        if not isinstance(spec, GuideSpec):
            raise ConfigError(f"guide 'llguidance' compiles a GuideSpec, got {type(spec).__name__}")
        return LLGuidanceMatcher(self.vocabulary, self._template(spec).deep_copy(), spec)

    @property
    def cached(self) -> int:
        """How many compiled constraints are cached."""
        return len(self._compiled)

    def fill_bitmasks(self, matchers: Sequence[GuideMatcher | None], bitmask: Tensor) -> None:
        """All rows at once: unconstrained rows allow everything, llguidance rows are computed in parallel by
        one ``LLExecutor`` call, any other matcher fills its own row."""
        if not matchers:
            return
        _checked_row(bitmask, 0, self.vocabulary.size)
        if bitmask.shape[0] < len(matchers):
            raise PlugformerError(f"structured output: a bitmask of {bitmask.shape[0]} rows for {len(matchers)} "
                                  "matchers")
        ours = []
        for row, matcher in enumerate(matchers):
            if matcher is None:
                bitmask[row] = -1
            elif isinstance(matcher, LLGuidanceMatcher):
                ours.append((matcher.matcher, row))
            else:
                matcher.fill_bitmask(bitmask, row)
        if ours:
            if self._executor is None:
                threads = self.config.threads
                self._executor = self._llg.LLExecutor(int(threads)) if threads else self._llg.LLExecutor()
            row_bytes = bitmask.shape[1] * bitmask.element_size()
            self._executor.unsafe_compute_mask_ptr(ours, bitmask.data_ptr(), row_bytes, bitmask.shape[0])


__all__ = ["LLGuidance", "LLGuidanceMatcher", "one_line"]
