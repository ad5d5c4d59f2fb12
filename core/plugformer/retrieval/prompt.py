"""The retrieval-augmented prompt: numbered passages, then the question. One owner for the format, so the
``rag`` command, the server's retrieval-augmented chat, the ``facts_qa`` fine-tuning records and the answer
benchmark all build the same text a model was trained on."""
from __future__ import annotations

from collections.abc import Sequence

from plugformer.errors import ConfigError

#: the default template: ``{passages}`` (the numbered passages, one per line) and ``{question}``
DEFAULT_TEMPLATE = "Passages:\n{passages}\nQuestion: {question}\nAnswer:"
#: how each passage is written into ``{passages}``: its 1-based number and its text (newlines flattened)
PASSAGE_FORMAT = "[{number}] {text}\n"


def check_template(template: str) -> str:
    """``template`` if it has both ``{passages}`` and ``{question}`` and nothing else in braces, else one line."""
    try:
        template.format(passages="", question="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"rag template {template!r} may use only {{passages}} and {{question}} ({exc})") from None
    for field in ("{passages}", "{question}"):
        if field not in template:
            raise ConfigError(f"rag template {template!r} must contain {field}")
    return template


def format_passages(passages: Sequence[str]) -> str:
    """The passages numbered from 1, one per line."""
    return "".join(PASSAGE_FORMAT.format(number=i, text=" ".join(str(p).split())) for i, p in enumerate(passages, 1))


def rag_prompt(question: str, passages: Sequence[str], template: str = DEFAULT_TEMPLATE) -> str:
    """The prompt a retrieval-augmented model answers: ``template`` filled with the numbered ``passages`` and
    ``question`` (whitespace-normalised)."""
    return check_template(template).format(passages=format_passages(passages), question=" ".join(question.split()))


__all__ = ["DEFAULT_TEMPLATE", "PASSAGE_FORMAT", "check_template", "format_passages", "rag_prompt"]
