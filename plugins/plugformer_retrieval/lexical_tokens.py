"""The words the ``bm25`` retriever indexes: lower-cased runs of letters and digits, with identifiers also split
into their parts, because the knowledge bases this project searches mix prose and code.

``"Use argparse.ArgumentParser.parse_args()"`` → ``use argparse argumentparser argument parser parse_args parse
args``: a query that writes ``parse args`` or ``ArgumentParser`` finds the chunk, and the whole identifier still
counts as a word of its own, so an exact identifier match scores higher. Identifier parts split at underscores
and at lower→upper case changes (``HTTPServer`` → ``http``, ``server``); no stemming.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Sequence

#: a word: letters, digits and underscores (any script)
WORD = re.compile(r"\w+")
#: the parts of an ASCII identifier: an acronym before a capitalised word, a (capitalised) word, an acronym, digits
PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def identifier_parts(word: str) -> list[str]:
    """``word``'s parts, lower-cased: split at underscores, and at case changes where it is ASCII."""
    parts: list[str] = []
    for piece in word.split("_"):
        if piece.isascii():
            parts += PART.findall(piece)
        elif piece:
            parts.append(piece)
    return [part.lower() for part in parts]


def words(text: str, *, split_identifiers: bool = True, stopwords: Collection[str] = ()) -> list[str]:
    """The tokens of ``text`` in order (see the module docstring); words in ``stopwords`` are dropped."""
    out: list[str] = []
    for match in WORD.finditer(text):
        word = match.group().strip("_").lower()
        if not word:
            continue
        parts = identifier_parts(match.group().strip("_")) if split_identifiers else []
        out.append(word)
        if len(parts) > 1:
            out += parts
    return [w for w in out if w not in stopwords] if stopwords else out


def tokenize_all(texts: Sequence[str], *, split_identifiers: bool = True,
                 stopwords: Collection[str] = ()) -> list[list[str]]:
    """:func:`words` of each text."""
    return [words(text, split_identifiers=split_identifiers, stopwords=stopwords) for text in texts]
