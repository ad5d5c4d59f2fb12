"""Valid ranges of numeric config fields, declared next to each field and checked at compose time.

Every numeric field of every schema (the core's and each plugin's) declares its range with :func:`bounded`::

    @dataclass
    class MyAttentionConfig:
        window: Optional[int] = bounded(None, ge=1)   # None passes; a number must be >= 1
        temperature: float = bounded(1.0, gt=0)
        betas: List[float] = bounded(default_factory=lambda: [0.9, 0.95], ge=0, lt=1)  # each item

so ``attention.window=0`` is refused in one line (``attention.window=0 must be >= 1``)
before anything is built, and a numeric field without a range fails the conformance kit's schema contract.
NaN and infinities are out of every range. The range is stored in the field's metadata under
:data:`RANGE_KEY`; :func:`field_range` reads it back.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Union

#: the ``dataclasses.field`` metadata key holding a field's :class:`Range`
RANGE_KEY = "plugformer_range"


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Range:
    """Bounds of a number: ``ge`` (>=), ``gt`` (>), ``le`` (<=), ``lt`` (<); None means unbounded.
    Always finite: NaN and +-inf are refused whatever the bounds."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        if self.ge is not None and self.gt is not None or self.le is not None and self.lt is not None:
            raise ValueError("a range takes at most one lower bound (ge or gt) and one upper bound (le or lt)")

    def describe(self) -> str:
        """The rule in words: ``>= 1``, ``in [0, 1)``, ``a finite number``."""
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            return f"in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
        if low:
            return f"{'>=' if low[0] == '[' else '>'} {_num(low[1])}"
        if high:
            return f"{'<=' if high[0] == ']' else '<'} {_num(high[1])}"
        return "a finite number"

    def contains(self, value: float) -> bool:
        """True when ``value`` is a finite number inside the bounds."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return not ((self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt)
                    or (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt))

    def problem(self, key: str, value: Any) -> str | None:
        """One line when ``value`` (a number, None, or a list of them: each item is checked) is out of range."""
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            bad = [(i, v) for i, v in enumerate(value) if v is not None and not self.contains(v)]
            if not bad:
                return None
            i, v = bad[0]
            return f"{key}[{i}]={_num(v)} must be {self.describe()}"
        if self.contains(value):
            return None
        shown = _num(value) if isinstance(value, (int, float)) else repr(value)
        return f"{key}={shown} must be {self.describe()}"


#: ranges of the fields the core adds to a family's node (``plugformer.build.CORE_FIELDS``)
CORE_FIELD_RANGES: dict[str, dict[str, Range]] = {"data": {"seq_len": Range(ge=1)}}


def bounded(default: Any = dataclasses.MISSING, *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field whose value must lie in the given bounds (see :class:`Range`); no bounds means any
    finite number. For a list field every item is checked; None always passes (use a non-Optional type to
    require a number)."""
    metadata = {RANGE_KEY: Range(ge=ge, gt=gt, le=le, lt=lt)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_range(f: dataclasses.Field) -> Range | None:
    """The range ``f`` declares, or None."""
    return f.metadata.get(RANGE_KEY) if f.metadata else None


def is_numeric(hint: Any) -> bool:
    """True for ``int``/``float`` (not ``bool``), ``Optional`` of them and lists of them."""
    if hint in (int, float):
        return True
    origin = typing.get_origin(hint)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if origin is Union or origin is types.UnionType:
        return bool(args) and all(is_numeric(a) for a in args)
    if origin in (list, tuple, typing.List, typing.Tuple) and args:  # noqa: UP006
        return all(is_numeric(a) for a in args if a is not Ellipsis)
    return False


def unranged_numeric_fields(schema: type) -> list[str]:
    """Names of ``schema``'s numeric fields that declare no range (each should use :func:`bounded`)."""
    hints = typing.get_type_hints(schema)
    return [f.name for f in dataclasses.fields(schema) if is_numeric(hints[f.name]) and field_range(f) is None]


def check_prompt_fits(prompt_tokens: int, max_new_tokens: int, context: int, name: str = "max_new_tokens") -> None:
    """Refuse a prompt that does not fit the model's context together with ``max_new_tokens`` new tokens,
    naming both numbers (generation never crops a prompt silently). ``name`` is what the caller calls the
    budget (the engine's ``max_tokens``). Raises :class:`ConfigError`."""
    from plugformer.errors import ConfigError

    if max_new_tokens < 1:
        raise ConfigError(f"{name}={max_new_tokens} must be >= 1")
    if max_new_tokens >= context:
        raise ConfigError(f"{name}={max_new_tokens} leaves no room for a prompt in the model's context of "
                          f"{context} tokens (at most {context - 1})")
    if prompt_tokens + max_new_tokens > context:
        raise ConfigError(f"the prompt is {prompt_tokens} tokens, but with {name}={max_new_tokens} the "
                          f"model's context of {context} tokens leaves room for {context - max_new_tokens}; "
                          f"shorten the prompt or lower {name}")
