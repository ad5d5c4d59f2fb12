"""Chunk ids in retrievers: refusing ids that are already present, and the map between string chunk ids and the
int64 labels faiss stores (persisted as JSON, never pickle)."""
from __future__ import annotations

from collections.abc import Container, Iterator, Sequence
from typing import Any

from plugformer import PlugformerError


def check_new_ids(ids: Sequence[str], present: Container[str]) -> None:
    """Refuse ids repeated within ``ids`` or already in ``present``, naming them (the retriever's contract:
    replacing a chunk is delete, then add)."""
    seen: set[str] = set()
    repeated = []
    for id_ in ids:
        if id_ in seen:
            repeated.append(id_)
        seen.add(id_)
    if repeated:
        raise PlugformerError(f"chunk ids given twice in one add: {some(repeated)}")
    taken = [id_ for id_ in ids if id_ in present]
    if taken:
        raise PlugformerError(f"chunk ids already indexed: {some(taken)} (delete them first to replace them)")


def some(ids: Sequence[str], shown: int = 5) -> str:
    """The first ``shown`` ids, quoted, and how many more."""
    listed = ", ".join(repr(i) for i in ids[:shown])
    return listed + (f" and {len(ids) - shown} more" if len(ids) > shown else "")


class LabelMap:
    """String chunk ids ↔ int64 labels. Labels are handed out in increasing order and never reused, so a label
    left in an index after its id was deleted (a tombstone) can never be mistaken for a newer chunk."""

    def __init__(self, labels: dict[str, int] | None = None, next_label: int = 0):
        self._labels: dict[str, int] = dict(labels or {})
        self._ids: dict[int, str] = {label: id_ for id_, label in self._labels.items()}
        self.next_label = next_label

    def __contains__(self, id_: object) -> bool:
        return id_ in self._labels

    def __len__(self) -> int:
        return len(self._labels)

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels)

    def reserve(self, count: int) -> list[int]:
        """The labels the next ``count`` ids will get (nothing changes until :meth:`assign`)."""
        return list(range(self.next_label, self.next_label + count))

    def assign(self, ids: Sequence[str]) -> None:
        """Give ``ids`` the labels :meth:`reserve` returned for them."""
        for id_, label in zip(ids, self.reserve(len(ids))):
            self._labels[id_] = label
            self._ids[label] = id_
        self.next_label += len(ids)

    def labels(self, ids: Sequence[str]) -> list[int]:
        """The labels of those ``ids`` that are present."""
        return [self._labels[id_] for id_ in ids if id_ in self._labels]

    def discard(self, labels: Sequence[int]) -> None:
        """Forget the ids of ``labels``."""
        for label in labels:
            self._labels.pop(self._ids.pop(label), None)

    def id_of(self, label: int) -> str | None:
        """The id of ``label``, None for a label no id holds (-1 padding, a tombstone)."""
        return self._ids.get(label)

    def to_json(self) -> dict[str, Any]:
        """The JSON-able state :meth:`from_json` reads."""
        return {"next_label": self.next_label, "labels": self._labels}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> LabelMap:
        """The map :meth:`to_json` wrote; a malformed value raises ``ValueError``."""
        labels, next_label = value.get("labels"), value.get("next_label")
        if not isinstance(labels, dict) or not isinstance(next_label, int):
            raise ValueError("expected 'labels' (an object) and 'next_label' (an integer)")
        if any(not isinstance(v, int) or not 0 <= v < next_label for v in labels.values()):
            raise ValueError("a label is not an integer below next_label")
        if len(set(labels.values())) != len(labels):
            raise ValueError("two ids share a label")
        return cls({str(k): int(v) for k, v in labels.items()}, next_label)
