"""Token ids → text, incrementally: deltas that never split a UTF-8 character and stop strings
matched on the decoded text, across token boundaries.

Decoding the whole output again at every step costs O(n²); instead :class:`TextTracker` decodes a
short window: the tokens since the last emitted piece, after a few tokens of context (tokenizers such
as sentencepiece decode a token differently at the start of a string). A window whose text ends in
U+FFFD is an incomplete UTF-8 sequence: nothing is released until the next token completes it.
"""
from __future__ import annotations

from collections.abc import Sequence

from plugformer.interfaces import Tokenizer

#: prompt tokens kept as decoding context for the first output token
CONTEXT_TOKENS = 4
REPLACEMENT = "\ufffd"


class TextTracker:
    """The decoded text of one output as tokens arrive, cut at the first stop string.

    :meth:`add` takes the next token id and returns the stop string that matched (or None);
    :meth:`release` returns the text not handed out yet that can no longer change: everything while
    finishing, else all but what might still be the start of a stop string.
    """

    def __init__(self, tokenizer: Tokenizer, prompt: Sequence[int], stop: Sequence[str] = (),
                 include_stop: bool = False):
        self.tokenizer, self.stop, self.include_stop = tokenizer, tuple(stop), include_stop
        self.ids: list[int] = list(prompt[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.ids)
        self.text = ""
        self.released = 0
        self.holdback = max((len(s) for s in self.stop), default=1) - 1

    def add(self, token_id: int) -> str | None:
        self.ids.append(token_id)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset])
        window = self.tokenizer.decode(self.ids[self.prefix_offset:])
        if window.endswith(REPLACEMENT) or len(window) < len(prefix):
            return None  # an incomplete character: wait for the bytes that finish it
        before = len(self.text)
        self.text += window[len(prefix):]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return self._cut_at_stop(before)

    def flush(self) -> None:
        """Append whatever the last tokens decode to, complete or not (the output is finishing)."""
        if self.read_offset < len(self.ids):
            prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset])
            window = self.tokenizer.decode(self.ids[self.prefix_offset:])
            self.text += window[len(prefix):]
            self.read_offset = len(self.ids)

    def _cut_at_stop(self, before: int) -> str | None:
        if not self.stop:
            return None
        start = max(0, before - self.holdback)
        found: tuple[int, str] | None = None
        for s in self.stop:
            at = self.text.find(s, start)
            if at >= 0 and (found is None or at < found[0]):
                found = (at, s)
        if found is None:
            return None
        at, s = found
        self.text = self.text[:at + len(s)] if self.include_stop else self.text[:at]
        return s

    def release(self, finishing: bool) -> str:
        """The text not yet handed out that is final now."""
        end = len(self.text) if finishing else max(self.released, len(self.text) - self.holdback)
        piece = self.text[self.released:end]
        self.released = end
        return piece


__all__ = ["TextTracker"]
