"""OpenAI request bodies → what the engine runs: prompts and :class:`SamplingParams`, or an :class:`APIError`
naming the bad field.

One owner for the request side of the OpenAI API here: which fields exist, which are refused, how each
maps onto ``SamplingParams`` (vLLM's names), and the error envelope every failure is answered with.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from plugformer import PlugformerError
from plugformer.engine import MAX_LOGPROBS, SamplingParams
from plugformer.interfaces import GuideSpec

#: fields OpenAI defines that this server does not implement: a request setting one is refused (400)
#: rather than silently answered without it
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logit_bias", "suffix", "echo", "best_of",
               "audio", "modalities", "prediction", "web_search_options")

#: chat roles the checkpoint's chat template renders (``developer`` is OpenAI's newer name for ``system``)
CHAT_ROLES = ("system", "developer", "user", "assistant")


class APIError(Exception):
    """An HTTP error answered with OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or _ERROR_TYPES.get(status, "invalid_request_error")
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 408: "timeout_error",
                413: "invalid_request_error", 429: "rate_limit_error", 500: "internal_error",
                503: "service_unavailable_error"}


def bad(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    """A 400 naming ``param``."""
    return APIError(400, message, param, code)


def parse_json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"the request body is not valid JSON: {exc}", None, "invalid_json") from None
    if not isinstance(data, dict):
        raise bad(f"the request body must be a JSON object, got {type(data).__name__}", None, "invalid_json")
    return data


# ---- field readers: each names its field when the value is wrong -----------------------------------------

def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _int(body: Mapping[str, Any], name: str, low: int | None = None, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{name}' must be an integer, got {_type_name(value)} {value!r}", name, "invalid_type")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise bad(f"'{name}' must be {bounds}, got {value}", name)
    return value


def _number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise bad(f"'{name}' must be a number, got {_type_name(value)} {value!r}", name, "invalid_type")
    return float(value)


def _bool(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f"'{name}' must be true or false, got {_type_name(value)} {value!r}", name, "invalid_type")
    return value


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or any(not isinstance(s, str) or not s for s in values):
        raise bad(f"'stop' must be a non-empty string or a list of them, got {value!r}", "stop", "invalid_type")
    return tuple(values)


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, int) and not isinstance(i, bool)
                                                             for i in value)


# ---- what a request becomes -------------------------------------------------------------------------------

@dataclass
class Plan:
    """What one API request asks of the engine: one or more prompts, each run with ``params``."""

    model: str
    prompts: list[str | list[int]]
    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    #: chat: ``top_logprobs`` alternatives per token were asked (None: no logprobs)
    logprobs: int | None = None
    #: extension fields added to the response body (streaming: to the first chunk), e.g. ``plugformer.passages``
    extra: dict[str, Any] = field(default_factory=dict)


_PARAM_NAME = re.compile(r"SamplingParams\.(\w+)=")


def sampling_params(body: Mapping[str, Any], *, max_tokens: int | None, max_tokens_field: str,
                    logprobs: int | None, adapter: str | None, default_max_tokens: int) -> SamplingParams:
    """``SamplingParams`` from the fields both endpoints share; range errors name the API field."""
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise bad("'stream_options' must be an object", "stream_options", "invalid_type")
    structured = None
    if body.get("response_format") is not None:
        try:
            structured = GuideSpec.from_response_format(body["response_format"])
        except PlugformerError as exc:
            raise bad(str(exc), "response_format") from None
    top_k = _int(body, "top_k")
    stop_token_ids = body.get("stop_token_ids")
    if stop_token_ids is not None and not isinstance(stop_token_ids, list):
        raise bad("'stop_token_ids' must be a list of token ids", "stop_token_ids", "invalid_type")
    values: dict[str, Any] = {
        "max_tokens": max_tokens if max_tokens is not None else default_max_tokens,
        "temperature": _number(body, "temperature"), "top_p": _number(body, "top_p"), "top_k": top_k,
        "min_p": _number(body, "min_p"), "seed": _int(body, "seed"), "stop": _stop(body),
        "stop_token_ids": tuple(stop_token_ids or ()), "n": _int(body, "n"), "logprobs": logprobs,
        "presence_penalty": _number(body, "presence_penalty"),
        "frequency_penalty": _number(body, "frequency_penalty"),
        "repetition_penalty": _number(body, "repetition_penalty"),
        "ignore_eos": _bool(body, "ignore_eos"),
        "include_stop_str_in_output": _bool(body, "include_stop_str_in_output"),
        "adapter": adapter, "structured": structured,
    }
    values = {k: v for k, v in values.items() if v is not None}
    try:
        return SamplingParams(**values)
    except PlugformerError as exc:
        found = _PARAM_NAME.search(str(exc))
        name = found.group(1) if found else None
        param = {"max_tokens": max_tokens_field, "logprobs": "top_logprobs" if max_tokens_field ==
                 "max_completion_tokens" else "logprobs"}.get(name or "", name)
        message = str(exc).replace(f"SamplingParams.{name}", f"'{param}'") if name else str(exc)
        raise bad(message, param) from None


def refuse_unsupported(body: Mapping[str, Any]) -> None:
    """A 400 naming the first field set that this server does not implement."""
    for name in UNSUPPORTED:
        value = body.get(name)
        if value is None or value is False or value == {} or value == [] or (name == "best_of" and value == 1):
            continue
        raise bad(f"'{name}' is not supported by this server", name, "unsupported_parameter")


def model_of(body: Mapping[str, Any], default: str) -> str:
    value = body.get("model", default)
    if not isinstance(value, str) or not value:
        raise bad(f"'model' must be a model name string, got {value!r}", "model", "invalid_type")
    return value


def completion_plan(body: dict[str, Any], default_model: str) -> Plan:
    """A ``/v1/completions`` request: ``prompt`` is a string, a list of token ids, or a list of either."""
    refuse_unsupported(body)
    prompt = body.get("prompt")
    if isinstance(prompt, str) or _token_ids(prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or _token_ids(p) for p in prompt):
        prompts = list(prompt)
    else:
        raise bad("'prompt' must be a non-empty string, a list of token ids, or a list of those, got "
                  f"{_type_name(prompt)}", "prompt", "invalid_type" if prompt else "missing_prompt")
    if any(p == "" for p in prompts):
        raise bad("'prompt' is empty", "prompt", "empty_prompt")
    stream = _bool(body, "stream")
    logprobs = _int(body, "logprobs", 0, MAX_LOGPROBS)
    return Plan(model_of(body, default_model), prompts,
                sampling_params(body, max_tokens=_int(body, "max_tokens", 1), max_tokens_field="max_tokens",
                                logprobs=logprobs, adapter=None, default_max_tokens=16),
                stream, _include_usage(body, stream), logprobs)


def chat_messages(body: Mapping[str, Any]) -> list[dict[str, str]]:
    """``messages`` as ``[{"role", "content"}]`` with text content (content parts of type text are joined)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("'messages' must be a non-empty list of {role, content} objects", "messages",
                  "invalid_type" if messages else "missing_messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"'{where}' must be an object with 'role' and 'content'", where, "invalid_type")
        role = m.get("role")
        if role not in CHAT_ROLES:
            raise bad(f"'{where}.role' {role!r} is not supported; roles: {', '.join(CHAT_ROLES)}",
                      f"{where}.role")
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad(f"'{where}.content[{j}]' must be a text part ({{\"type\": \"text\", \"text\": ...}}); "
                              "other content types are not supported", f"{where}.content")
                parts.append(part["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise bad(f"'{where}.content' must be a string or a list of text parts, got {_type_name(content)}",
                      f"{where}.content", "invalid_type")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def chat_plan(body: dict[str, Any], default_model: str, prompt_ids: list[int] | None = None,
              context: int | None = None) -> Plan:
    """A ``/v1/chat/completions`` request whose rendered prompt is ``prompt_ids``; without a token limit
    the answer may use the rest of the model's ``context``."""
    refuse_unsupported(body)
    stream = _bool(body, "stream")
    logprobs = None
    top = _int(body, "top_logprobs", 0, MAX_LOGPROBS)
    if _bool(body, "logprobs"):
        logprobs = top or 0
    elif top is not None:
        raise bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    limit_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _int(body, limit_field, 1)
    default = max(1, (context or 16) - len(prompt_ids or ()))
    return Plan(model_of(body, default_model), [list(prompt_ids or ())],
                sampling_params(body, max_tokens=max_tokens, max_tokens_field=limit_field, logprobs=logprobs,
                                adapter=None, default_max_tokens=default),
                stream, _include_usage(body, stream), logprobs)


def _include_usage(body: Mapping[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise bad("'stream_options' must be an object", "stream_options", "invalid_type")
    if not stream:
        raise bad("'stream_options' is only allowed with 'stream': true", "stream_options")
    return _bool(options, "include_usage")


def with_adapter(params: SamplingParams, adapter: str | None) -> SamplingParams:
    """``params`` run through the LoRA adapter ``adapter`` (None: the base model)."""
    if adapter is None:
        return params
    from dataclasses import replace

    return replace(params, adapter=adapter)


def check_prompts(prompts: Sequence[str | list[int]], vocab: int) -> None:
    """Token-id prompts must lie in the vocabulary."""
    for prompt in prompts:
        if isinstance(prompt, list):
            bad_id = next((i for i in prompt if not 0 <= i < vocab), None)
            if bad_id is not None:
                raise bad(f"'prompt' token id {bad_id} is not in the vocabulary (0 .. {vocab - 1})", "prompt")


__all__ = ["CHAT_ROLES", "UNSUPPORTED", "APIError", "Plan", "bad", "chat_messages", "chat_plan", "check_prompts",
           "completion_plan", "model_of", "parse_json", "refuse_unsupported", "sampling_params", "with_adapter"]
