"""The embedded default knowledge base: the Python documentation topics that ship with CPython
(``pydoc_data.topics``, what ``help("with")`` prints). Like the standard-library training corpus, it is on
every machine with Python, so ``plugformer index build`` and ``plugformer rag`` work with no data brought."""
from __future__ import annotations

from collections.abc import Iterator

from plugformer.retrieval.chunking import Document

#: the ``data.path`` value that names the embedded knowledge base (also the default)
PYDOC_TOPICS = "pydoc_topics"


def pydoc_topics() -> Iterator[Document]:
    """One document per documentation topic, in sorted order; source ``pydoc:<topic>``, metadata ``title``."""
    from pydoc_data.topics import topics

    for name in sorted(topics):
        text = topics[name]
        if text.strip():
            yield Document(f"pydoc:{name}", text, {"title": name})


__all__ = ["PYDOC_TOPICS", "pydoc_topics"]
