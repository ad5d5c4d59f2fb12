"""Serving: the ``openai`` server (an OpenAI-compatible HTTP API on the inference engine: FastAPI +
uvicorn + SSE, Prometheus metrics) and the ``plugformer serve`` command.

Registration only: nothing here imports torch, FastAPI or uvicorn; targets are strings resolved on first
use. Needs the ``serve`` extra (``pip install plugformer[serve]``).
"""
from plugformer import hookimpl

plugformer_api = "1.1"  # the plugformer plugin API this package targets


@hookimpl
def plugformer_register(registries):
    registries.server.register(
        "openai", "plugformer_serve.server:OpenAIServer", schema="plugformer_serve.schemas:OpenAIServerConfig",
        description="OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models, "
                    "/v1/embeddings, retrieval-augmented chat) with SSE streaming, /health, /ready and Prometheus "
                    "/metrics",
        available="plugformer_serve.availability:serve_available")


@hookimpl
def plugformer_register_commands(commands):
    commands.register("serve", "plugformer_serve.command:run",
                      "serve a checkpoint over the OpenAI API: checkpoint=DIR [server.port=8000] "
                      "[server.api_key=KEY] [server.*=...] [embedder=NAME] [rag.index=DIR] (docs/serving.md)")
