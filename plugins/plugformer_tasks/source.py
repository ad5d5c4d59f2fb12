"""Task sources: deterministic problem generators with disjoint train and held-out splits.

A problem belongs to the held-out part of its space when a stable hash of its identity (the operands,
the input string) falls below ``val_fraction``; this partition is fixed (it depends on neither the seed,
the sizes asked for, nor the prompt wording), so no held-out problem ever appears in a train split,
whatever the seed or the prompt format of either run. Each split then draws its
distinct problems from its own part with a generator seeded by ``(seed, split)``.
"""
from __future__ import annotations

from abc import abstractmethod

import hashlib
import json
import random
import string
from collections.abc import Iterator
from typing import Any

from plugformer import ConfigError
from plugformer.interfaces import SPLITS, TextSource

from plugformer_tasks.schemas import TaskFormat


def held_out(key: str, val_fraction: float) -> bool:
    """Whether the problem ``key`` is in the held-out part of its space (stable across processes)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def check_prompt(prompt: str, fields: tuple[str, ...]) -> None:
    """A prompt format must name each of ``fields`` (and nothing else)."""
    names = {f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None}
    if names != set(fields):
        want = ", ".join("{" + f + "}" for f in fields)
        raise ConfigError(f"data.prompt={prompt!r} must contain exactly {want}")


class TaskSource(TextSource):
    """Records of one task; subclasses say how to draw a problem and a near-miss answer."""

    has_records = True
    task = "task"

    def __init__(self, config: Any):
        super().__init__(config)
        for key in ("n_train", "n_val"):
            if int(getattr(config, key)) < 1:
                raise ConfigError(f"data.{key} must be at least 1, got {getattr(config, key)!r}")
        if not 0.0 < float(config.val_fraction) < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {config.val_fraction!r}")
        self._cache: dict[str, list[dict[str, str]]] = {}

    # -- what a task defines ----------------------------------------------------------------------
    @abstractmethod
    def problem(self, rng: random.Random) -> tuple[str, str, str]:
        """A random (identity key, prompt, answer)."""

    @abstractmethod
    def wrong_answer(self, prompt: str, answer: str, rng: random.Random) -> str:
        """A plausible answer that is not ``answer`` (the rejected side of a preference pair)."""

    @abstractmethod
    def space_size(self) -> int:
        """How many distinct problems exist (bounds the sizes one can ask for)."""

    # -- records --------------------------------------------------------------------------------------
    def records(self, split: str) -> Iterator[dict[str, str]]:
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'; splits: {', '.join(SPLITS)}")
        if split not in self._cache:
            self._cache[split] = self._draw(split)
        yield from self._cache[split]

    def _draw(self, split: str) -> list[dict[str, str]]:
        c = self.config
        want = int(c.n_train if split == "train" else c.n_val)
        share = c.val_fraction if split == "val" else 1.0 - c.val_fraction
        if want > 0.8 * share * self.space_size():
            raise ConfigError(f"data.n_{split}={want} is too many for task '{self.task}': its {split} part holds "
                              f"about {int(share * self.space_size())} distinct problems; lower it or widen the task")
        rng = random.Random(f"{self.task}|{c.seed}|{split}")
        seen: set[str] = set()
        out: list[dict[str, str]] = []
        while len(out) < want:
            key, prompt, answer = self.problem(rng)
            if key in seen or held_out(f"{self.task}|{key}", c.val_fraction) != (split == "val"):
                continue
            seen.add(key)
            if TaskFormat(c.format) == TaskFormat.preference:
                out.append({"prompt": prompt, "chosen": answer, "rejected": self.wrong_answer(prompt, answer, rng)})
            else:
                out.append({"prompt": prompt, "response": answer})
        return out

    def documents(self, split: str) -> Iterator[str]:
        """Each problem and its (chosen) answer as one plain-text document."""
        for r in self.records(split):
            yield r["prompt"] + r.get("response", r.get("chosen", ""))

    def fingerprint(self) -> str:
        params = {k: (v.value if hasattr(v, "value") else v) for k, v in vars(self.config).items()}
        return f"task:{self.task}:" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


class AdditionTask(TaskSource):
    """``12+35=`` → ``47``."""

    task = "addition"

    def __init__(self, config: Any):
        super().__init__(config)
        if not 1 <= int(config.digits) <= 9:
            raise ConfigError(f"data.digits must be in 1..9, got {config.digits!r}")
        self.limit = 10 ** int(config.digits)
        check_prompt(config.prompt, ("a", "b"))

    def space_size(self) -> int:
        return self.limit ** 2

    def problem(self, rng: random.Random) -> tuple[str, str, str]:
        a, b = rng.randrange(self.limit), rng.randrange(self.limit)
        return f"{a},{b}", self.config.prompt.format(a=a, b=b), str(a + b)

    def wrong_answer(self, prompt: str, answer: str, rng: random.Random) -> str:
        wrong = int(answer) + rng.choice([-10, -1, 1, 10])
        return str(wrong if wrong >= 0 else int(answer) + 1)


class _StringTask(TaskSource):
    """A transformation of random lowercase strings."""

    def __init__(self, config: Any):
        super().__init__(config)
        if not 1 <= int(config.min_len) <= int(config.max_len):
            raise ConfigError(f"data.min_len={config.min_len} and data.max_len={config.max_len} need "
                              "1 <= min_len <= max_len")
        if len(set(config.alphabet)) < 2:
            raise ConfigError(f"data.alphabet={config.alphabet!r} needs at least two distinct characters")
        self.alphabet = "".join(sorted(set(config.alphabet)))
        check_prompt(config.prompt, ("text",))

    def space_size(self) -> int:
        k = len(self.alphabet)
        return sum(k ** n for n in range(int(self.config.min_len), int(self.config.max_len) + 1))

    @abstractmethod
    def transform(self, text: str) -> str:
        """The answer for the input ``text`` (reversed, upper-cased, ...)."""

    def problem(self, rng: random.Random) -> tuple[str, str, str]:
        n = rng.randint(int(self.config.min_len), int(self.config.max_len))
        text = "".join(rng.choice(self.alphabet) for _ in range(n))
        return text, self.config.prompt.format(text=text), self.transform(text)

    def wrong_answer(self, prompt: str, answer: str, rng: random.Random) -> str:
        i = rng.randrange(len(answer))
        swap = rng.choice([c for c in self.alphabet if c != answer[i].lower()])
        wrong = answer[:i] + (swap.upper() if answer[i].isupper() else swap) + answer[i + 1:]
        return wrong


class ReverseTask(_StringTask):
    """``rev abc=`` → ``cba``."""

    task = "reverse"

    def transform(self, text: str) -> str:
        return text[::-1]


class UppercaseTask(_StringTask):
    """``up abc=`` → ``ABC``."""

    task = "uppercase"

    def transform(self, text: str) -> str:
        return text.upper()
