"""The inference engine: continuous batching over a paged KV cache, with prefix caching.

- :class:`Engine`: holds a model, its tokenizer and a KV-cache block pool; ``generate`` runs prompts
  to completion, ``stream`` yields text deltas, ``add_request``/``step``/``abort`` let a server drive it.
- :class:`SamplingParams`: one request's decoding rules (vLLM's names).
- :class:`RequestOutput`, :class:`CompletionOutput`, :class:`Logprob`, :class:`StreamDelta`: results.
- :class:`AsyncEngine`: the step loop in one thread, requests as asyncio streams (what a server uses).
- :class:`QueueFull`: the bounded waiting queue refused a request (a server answers 429).
- :func:`beam_search` / :class:`BeamResult`: beam search matching Hugging Face ``generate(num_beams=N)``.

See docs/inference.md.
"""
from plugformer.engine.async_engine import AsyncEngine, EngineStopped, RequestStream
from plugformer.engine.beam import BeamResult, beam_search
from plugformer.engine.engine import DEFAULT_KV_CACHE_TOKENS, Engine, EngineStats, QueueFull
from plugformer.engine.outputs import CompletionOutput, FinishReason, Logprob, RequestOutput, StreamDelta
from plugformer.engine.params import MAX_LOGPROBS, SamplingParams
from plugformer.engine.support import RaggedUnsupported, check_ragged_support

__all__ = ["DEFAULT_KV_CACHE_TOKENS", "MAX_LOGPROBS", "AsyncEngine", "BeamResult", "CompletionOutput", "Engine",
           "EngineStats", "EngineStopped", "FinishReason", "Logprob", "QueueFull", "RaggedUnsupported", "RequestOutput",
           "RequestStream", "SamplingParams", "StreamDelta", "beam_search", "check_ragged_support"]

