"""Chat messages → prompt token ids, rendered with the chat template the checkpoint was fine-tuned with.

Rendering is fine-tuning's own (:func:`plugformer.training.prompt_and_answer` and
:func:`~plugformer.training.encode_pieces`): each turn is tokenized on its own and the prompt ends with
``assistant_start``, exactly as the model saw its training records. A checkpoint without a recorded
``template`` uses the ``plain`` template: messages concatenated (a system message followed by a newline).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from plugformer.interfaces import Tokenizer


def checkpoint_template(checkpoint: str | Path) -> Any:
    """The :class:`plugformer.training.ChatTemplate` recorded in the checkpoint's ``config.yaml`` (the
    ``finetune.template`` node ``plugformer finetune`` writes), or the plain template when there is none."""
    from plugformer.checkpoint import load_config, resolve_checkpoint
    from plugformer.training import ChatTemplate

    config = load_config(resolve_checkpoint(checkpoint))
    finetune = config.get("finetune")
    node = finetune.get("template") if hasattr(finetune, "get") else None
    return ChatTemplate.from_config(node) if node is not None else ChatTemplate()


def render_chat(messages: list[dict[str, str]], template: Any, tokenizer: Tokenizer) -> list[int]:
    """Token ids of ``messages`` followed by the opening of the assistant's answer."""
    from plugformer.training import ChatTemplate, encode_pieces, prompt_and_answer

    template = template if template is not None else ChatTemplate()
    record = {"messages": [*messages, {"role": "assistant", "content": ""}]}
    pieces, _ = prompt_and_answer(record, template, where="messages")
    return encode_pieces(pieces, tokenizer, close=False).ids


__all__ = ["checkpoint_template", "render_chat"]
