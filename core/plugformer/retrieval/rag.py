"""Retrieval-augmented generation as a library call: retrieve the ``k`` best passages for each question, build
the numbered-passage prompt (:func:`plugformer.retrieval.rag_prompt`), generate with the inference engine,
return the answers with their sources. The ``rag`` command, the server's retrieval-augmented chat and the
answer benchmark all call :func:`answer_questions`."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from plugformer.retrieval.index import Index, SearchResult
from plugformer.retrieval.prompt import DEFAULT_TEMPLATE, rag_prompt

if TYPE_CHECKING:
    from plugformer.engine import Engine, SamplingParams


@dataclass(frozen=True)
class RagAnswer:
    """One question's answer: the generated ``text``, the passages it was given (``sources``, best first, as
    numbered in the prompt), the ``prompt`` itself, the engine's ``finish_reason``, and how many retrieved
    passages were ``dropped`` because they did not fit the model's context."""

    question: str
    text: str
    sources: list[SearchResult]
    prompt: str
    finish_reason: str | None
    dropped: int = 0


def fitted_prompt(engine: Engine, question: str, passages: Sequence[SearchResult], max_tokens: int,
                  template: str = DEFAULT_TEMPLATE) -> tuple[str, list[SearchResult]]:
    """The prompt with as many of ``passages`` (best first) as fit the model's context with ``max_tokens`` to
    generate: lower-ranked passages are dropped rather than the prompt being truncated. Returns the prompt and
    the passages it holds."""
    kept = list(passages)
    while True:
        prompt = rag_prompt(question, [p.chunk.text for p in kept], template)
        if not kept or len(engine.encode(prompt)) + max_tokens <= engine.context:
            return prompt, kept
        kept.pop()


def answer_questions(engine: Engine, index: Index, questions: Sequence[str], *, k: int = 4,
                     template: str = DEFAULT_TEMPLATE, params: SamplingParams | None = None,
                     **search_options: Any) -> list[RagAnswer]:
    """Answer every question from its ``k`` retrieved passages (one batch through the engine)."""
    from plugformer.engine import SamplingParams

    params = params or SamplingParams(max_tokens=64, temperature=0.0)
    retrieved = index.search(questions, k, **search_options)
    prompts, kept = [], []
    for question, results in zip(questions, retrieved):
        prompt, passages = fitted_prompt(engine, question, results, params.max_tokens, template)
        prompts.append(prompt)
        kept.append(passages)
    outputs = engine.generate(prompts, params)
    return [RagAnswer(q, out.outputs[0].text, passages, prompt, out.outputs[0].finish_reason,
                      len(results) - len(passages))
            for q, out, passages, prompt, results in zip(questions, outputs, kept, prompts, retrieved)]


__all__ = ["RagAnswer", "answer_questions", "fitted_prompt"]
