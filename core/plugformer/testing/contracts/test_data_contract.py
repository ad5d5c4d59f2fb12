"""Text-source contract, for sources that work with their schema defaults: each split yields strings
(train at least one), in the same order every time, with a short fingerprint that is stable across
instances. Only the first few documents are read, so large default corpora stay cheap."""
from __future__ import annotations

from itertools import islice

import pytest

from plugformer.interfaces import SPLITS, TextSource
from plugformer.registry import Entry
from plugformer.testing.construct import build, label

contract = pytest.mark.plugformer_contract
HEAD = 3


def head(source: TextSource, split: str) -> list[str]:
    return list(islice(source.documents(split), HEAD))


@contract("data")
def test_each_split_yields_text(entry: Entry) -> None:
    source = build(entry)
    assert isinstance(source, TextSource), f"{label(entry)}: builds a {type(source).__name__}, not a TextSource"
    for split in SPLITS:
        docs = head(source, split)
        assert all(isinstance(d, str) for d in docs), f"{label(entry, split=split)}: yields non-strings"
    assert head(source, "train"), f"{label(entry)}: the train split is empty with the default settings"


@contract("data")
def test_order_and_fingerprint_are_deterministic(entry: Entry) -> None:
    first, second = build(entry), build(entry)
    for split in SPLITS:
        assert head(first, split) == head(second, split), \
            f"{label(entry, split=split)}: order differs between instances"
    fp = first.fingerprint()
    assert isinstance(fp, str) and 0 < len(fp) <= 128, f"{label(entry)}: fingerprint {fp!r} (want a short string)"
    assert second.fingerprint() == fp, f"{label(entry)}: fingerprint differs between identical instances"
