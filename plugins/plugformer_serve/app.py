"""The OpenAI-compatible HTTP application (FastAPI) over an :class:`~plugformer.engine.async_engine.AsyncEngine`.

Every request: authorised (``/v1/*`` when keys are set), body capped, parsed into prompts and
``SamplingParams`` (a 400 naming the field otherwise), admitted to the engine *before* any response
(so a full queue is a real 429, streaming included), then answered in full or as SSE chunks. A client
that leaves, or a request past ``timeout_s``, aborts its generation; the engine frees its blocks at the
next step. One JSON access-log line per request. ``/v1/embeddings`` (:mod:`plugformer_serve.embeddings`) and the
retrieval of retrieval-augmented chat (:mod:`plugformer_serve.rag`) run on worker threads of their own.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import sys
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from plugformer import PlugformerError
from plugformer.engine import (
    AsyncEngine,
    Engine,
    EngineStopped,
    QueueFull,
    RequestOutput,
    RequestStream,
    SamplingParams,
)
from plugformer_serve.chat import render_chat
from plugformer_serve.embeddings import EmbeddingService, embedding_model_name
from plugformer_serve.metrics import ServerMetrics
from plugformer_serve.protocol import (
    APIError,
    Plan,
    chat_messages,
    chat_plan,
    check_prompts,
    completion_plan,
    model_of,
    parse_json,
    with_adapter,
)
from plugformer_serve.rag import RagChat, passages_field, requested_k
from plugformer_serve.responses import ResponseWriter
from plugformer_serve.schemas import OpenAIServerConfig
from plugformer_serve.served_retrieval import ServedRetrieval
from plugformer_serve.workers import BoundedWorkers

access_log = logging.getLogger("plugformer.serve.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_OPEN_PATHS = ("/health", "/ready", "/metrics")


@dataclass
class ServeState:
    """What the handlers share: the engine, the settings, the metrics, and whether the server is draining."""

    engine: AsyncEngine
    config: OpenAIServerConfig
    chat_template: Any
    adapters: list[str]
    metrics: ServerMetrics
    draining: bool = False
    in_flight: int = 0  # HTTP requests being answered
    created: int = field(default_factory=lambda: int(time.time()))
    keys: list[bytes] = field(default_factory=list)
    embeddings: EmbeddingService | None = None  # /v1/embeddings (None: no embedder configured)
    rag: RagChat | None = None  # retrieval-augmented chat (None: no index)

    def authorize(self, request: Request) -> None:
        """A 401 unless the bearer token equals one of the keys (each compared in constant time)."""
        if not self.keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode() if scheme.lower() == "bearer" else b""
        matched = False
        for key in self.keys:  # compare with every key, so the time does not say which one was close
            matched |= hmac.compare_digest(given, key)
        if not matched:
            raise APIError(401, "a valid API key is required (Authorization: Bearer <key>)", None, "invalid_api_key")

    def adapter_for(self, model: str) -> str | None:
        """The adapter a request's ``model`` selects (None: the base model); 404 naming it otherwise."""
        if model == self.config.model_name:
            return None
        if model in self.adapters:
            return model
        names = ", ".join([self.config.model_name, *self.adapters])
        raise APIError(404, f"model {model!r} does not exist; models: {names}", "model", "model_not_found")


async def read_body(request: Request, cap: int) -> bytes:
    """The request body, or a 413 once it passes ``cap`` bytes (checked on Content-Length and while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise APIError(413, f"the request body ({declared} bytes) is over the limit of {cap} bytes", None,
                       "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise APIError(413, f"the request body is over the limit of {cap} bytes", None, "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _error_response(error: APIError, request_id: str | None = None) -> JSONResponse:
    headers = dict(error.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


class RequestContext:
    """ASGI middleware: the ``X-Request-Id`` (echoed, or made), 503 on ``/v1`` while draining, the count of
    requests being answered, and one JSON access-log line per request."""

    def __init__(self, app: Any, state: ServeState):
        self.app, self.state = app, state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        info: dict[str, Any] = {"request_id": request_id}
        scope.setdefault("state", {})["log"] = info
        status = [500]
        start = time.monotonic()

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        self.state.in_flight += 1
        try:
            if self.state.draining and scope["path"] not in _OPEN_PATHS:
                response = _error_response(APIError(503, "the server is shutting down", None, "shutting_down"),
                                           request_id)
                status[0] = 503
                await response(scope, receive, send)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            self.state.in_flight -= 1
            if status[0] >= 400:
                self.state.metrics.errors.labels(status=str(status[0])).inc()
            if scope["path"] not in _OPEN_PATHS:
                record = {"request_id": request_id, "method": scope["method"], "path": scope["path"],
                          "status": status[0], "model": info.get("model"),
                          "prompt_tokens": info.get("prompt_tokens"),
                          "completion_tokens": info.get("completion_tokens"),
                          "latency_s": round(time.monotonic() - start, 4)}
                access_log.info(json.dumps(record))


def create_app(engine: Engine, config: OpenAIServerConfig, *, chat_template: Any = None,
               adapters: Sequence[str] = (), retrieval: ServedRetrieval | None = None) -> FastAPI:
    """The FastAPI application serving ``engine`` (and, with ``retrieval``, ``/v1/embeddings`` and
    retrieval-augmented chat). Its lifespan starts the engine's step thread and, on the way out, drains it
    (``config.grace_s``)."""
    metrics = ServerMetrics()
    state = ServeState(AsyncEngine(engine, on_finish=metrics.observe), config, chat_template, list(adapters),
                       metrics, keys=[k.encode() for k in config.keys()])
    workers = None
    if retrieval is not None and (retrieval.embedder is not None or retrieval.index is not None):
        workers = BoundedWorkers(config.embedding_workers, config.embedding_max_waiting)
        if retrieval.embedder is not None:
            name = embedding_model_name(config.embedding_model, retrieval.embedder_name,
                                        [config.model_name, *adapters])
            state.embeddings = EmbeddingService(retrieval.embedder, name, config, workers, metrics)
        if retrieval.index is not None:
            state.rag = RagChat(retrieval, workers, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        state.draining = True
        await asyncio.to_thread(state.engine.shutdown, config.grace_s)
        if workers is not None:
            workers.shutdown()

    app = FastAPI(title="plugformer", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    app.add_middleware(RequestContext, state=state)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error_response(APIError(400, f"invalid request: {first.get('msg', exc)}", param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error_response(APIError(exc.status_code, message, None, "not_found" if exc.status_code == 404
                                        else None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        traceback.print_exception(exc, file=sys.stderr)  # for the operator; never in the response
        return _error_response(APIError(500, f"internal error ({type(exc).__name__}); see the server log"))

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.engine.error is not None:
            return JSONResponse({"status": "engine failed"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        if state.draining or not state.engine.accepting:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return JSONResponse({"status": "ready", "model": config.model_name})

    @app.get("/metrics")
    async def metrics_page() -> Response:
        return Response(metrics.render(state.engine.stats()), media_type=CONTENT_TYPE_LATEST)

    def model_card(name: str, parent: str | None = None) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": state.created, "owned_by": "plugformer",
                "root": name, "parent": parent}

    @app.get("/v1/models")
    async def list_models(request: Request) -> JSONResponse:
        state.authorize(request)
        cards = [model_card(config.model_name)] + [model_card(a, config.model_name) for a in state.adapters]
        if state.embeddings is not None:
            cards.append(model_card(state.embeddings.model))
        return JSONResponse({"object": "list", "data": cards})

    @app.get("/v1/models/{model:path}")
    async def get_model(model: str, request: Request) -> JSONResponse:
        state.authorize(request)
        if state.embeddings is not None and model == state.embeddings.model:
            return JSONResponse(model_card(model))
        state.adapter_for(model)
        return JSONResponse(model_card(model, None if model == config.model_name else config.model_name))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        arrival = time.monotonic()  # server.timeout_s counts from here
        state.authorize(request)
        body = parse_json(await read_body(request, config.max_body_bytes))
        plan = completion_plan(body, config.model_name)
        check_prompts(plan.prompts, engine.tokenizer.vocab_size)
        return await answer(request, plan, "completion", "prompt", arrival)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        arrival = time.monotonic()
        state.authorize(request)
        body = parse_json(await read_body(request, config.max_body_bytes))
        messages = chat_messages(body)
        k = requested_k(body, state.rag.served.k if state.rag is not None else None)
        extension: dict[str, Any] = {}
        if k is None:
            ids = await asyncio.to_thread(render_chat, messages, chat_template, engine.tokenizer)
        else:
            chat_plan(body, config.model_name)  # a bad field is refused before any retrieval is done for it
            state.adapter_for(model_of(body, config.model_name))
            ids, passages = await state.rag.prompt(  # type: ignore[union-attr]
                body, messages, k, template=chat_template, tokenizer=engine.tokenizer, context=engine.context,
                timeout=max(0.0, config.timeout_s - (time.monotonic() - arrival)))
            extension["plugformer"] = {"passages": passages_field(passages)}
        plan = chat_plan(body, config.model_name, ids, engine.context)
        plan.extra.update(extension)
        return await answer(request, plan, "chat", "messages", arrival)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        arrival = time.monotonic()
        state.authorize(request)
        if state.embeddings is None:
            raise APIError(404, "this server has no embedding model: POST /v1/embeddings needs plugformer serve "
                           "... embedder=NAME (or rag.index=DIR of an index with an embedder)", "model",
                           "model_not_found")
        body = parse_json(await read_body(request, config.max_body_bytes))
        timeout = max(0.0, config.timeout_s - (time.monotonic() - arrival))
        return JSONResponse(await state.embeddings.answer(body, timeout, request.state.log))

    async def answer(request: Request, plan: Plan, kind: str, prompt_field: str, arrival: float) -> Response:
        info = request.state.log
        info["model"] = plan.model
        params = with_adapter(plan.params, state.adapter_for(plan.model))
        response_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        streams = await admit(plan.prompts, params, response_id, prompt_field)
        writer = ResponseWriter(kind, response_id, plan.model, params.n, plan.logprobs)
        if plan.stream:
            return EventSourceResponse(stream_events(streams, writer, plan, arrival, info), ping=15,
                                       headers={"cache-control": "no-cache"})
        outputs = await finish_or_cancel(request, streams, arrival)
        info["prompt_tokens"] = sum(len(o.prompt_token_ids) for o in outputs)
        info["completion_tokens"] = sum(len(c.token_ids) for o in outputs for c in o.outputs)
        if any(c.finish_reason == "abort" for o in outputs for c in o.outputs):
            raise APIError(503, "the request was cancelled: the server is shutting down", None, "shutting_down")
        return JSONResponse({**writer.full(outputs), **plan.extra})

    async def admit(prompts: list, params: SamplingParams, response_id: str, prompt_field: str) -> list[RequestStream]:
        """Every prompt queued in the engine, or none of them and the error: 429 (queue full), 503
        (shutting down), 400 (cannot fit)."""
        streams: list[RequestStream] = []
        try:
            for i, prompt in enumerate(prompts):
                streams.append(await state.engine.generate(prompt, params, f"{response_id}-{i}"))
        except BaseException as exc:
            for stream in streams:
                await stream.aclose()
            if isinstance(exc, QueueFull):
                raise APIError(429, f"the server is at capacity ({exc}); retry later", None, "queue_full",
                               headers={"retry-after": "1"}) from None
            if isinstance(exc, EngineStopped):
                raise APIError(503, str(exc), None, "shutting_down") from None
            if isinstance(exc, PlugformerError):
                code = "context_length_exceeded" if "context" in str(exc) or "KV cache" in str(exc) else None
                raise APIError(400, str(exc), prompt_field, code) from None
            raise
        return streams

    async def drain(streams: list[RequestStream]) -> list[RequestOutput]:
        for stream in streams:
            async for _ in stream:
                pass
        return [s.output for s in streams]  # type: ignore[misc]

    async def until_disconnected(request: Request) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    async def finish_or_cancel(request: Request, streams: list[RequestStream], arrival: float) -> list[RequestOutput]:
        """The outputs once every stream ended; the client leaving or ``timeout_s`` passing aborts them."""
        work = asyncio.create_task(drain(streams))
        gone = asyncio.create_task(until_disconnected(request))
        try:
            remaining = max(0.0, config.timeout_s - (time.monotonic() - arrival))
            done, _ = await asyncio.wait({work, gone}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                for stream in streams:
                    await stream.aclose()
        if work in done:
            return work.result()
        if gone in done:
            raise APIError(499, "the client closed the connection", None, "client_closed")
        raise APIError(408, f"the request did not finish within server.timeout_s={config.timeout_s:g} s and was "
                       "cancelled", None, "timeout")

    async def stream_events(streams: list[RequestStream], writer: ResponseWriter, plan: Plan, arrival: float,
                            info: dict[str, Any]) -> AsyncIterator[dict[str, str]]:
        """SSE events: OpenAI chunks per delta, the usage chunk if asked, ``[DONE]``; an error event on
        timeout or cancellation. Leaving (client gone: the task is cancelled) aborts every stream."""
        try:
            if writer.kind == "chat":
                for p in range(len(streams)):
                    for i in range(plan.params.n):
                        first = writer.chunk(p, role=True, index=p * plan.params.n + i,
                                             include_usage=plan.include_usage)
                        yield {"data": json.dumps({**first, **plan.extra} if p == i == 0 else first)}
            for p, stream in enumerate(streams):
                while True:
                    remaining = config.timeout_s - (time.monotonic() - arrival)
                    try:
                        delta = await asyncio.wait_for(stream.__anext__(), timeout=max(0.0, remaining))
                    except StopAsyncIteration:
                        break
                    if delta.finish_reason == "abort":
                        raise EngineStopped("the request was cancelled: the server is shutting down")
                    if not delta.text_delta and delta.finish_reason is None and (plan.logprobs is None
                                                                                  or not delta.token_ids):
                        continue  # text held back (an incomplete character, a possible stop string)
                    yield {"data": json.dumps(writer.chunk(p, delta, include_usage=plan.include_usage))}
            outputs = [s.output for s in streams]
            info["prompt_tokens"] = sum(len(o.prompt_token_ids) for o in outputs)
            info["completion_tokens"] = sum(len(c.token_ids) for o in outputs for c in o.outputs)
            if plan.include_usage:
                yield {"data": json.dumps(writer.usage_chunk(outputs))}
            yield {"data": "[DONE]"}
        except (asyncio.TimeoutError, EngineStopped) as exc:
            timed_out = isinstance(exc, asyncio.TimeoutError)
            error = APIError(408, f"the request did not finish within server.timeout_s={config.timeout_s:g} s "
                             "and was cancelled", None, "timeout") if timed_out else \
                APIError(503, str(exc), None, "shutting_down")
            info["error"] = error.code
            yield {"data": json.dumps(error.body())}
        finally:
            for stream in streams:
                await stream.aclose()

    return app


__all__ = ["RequestContext", "ServeState", "create_app", "read_body"]
