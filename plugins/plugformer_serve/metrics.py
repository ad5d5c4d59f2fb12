"""The Prometheus metrics of a server (``GET /metrics``), in a registry of their own.

Names follow vLLM's (``plugformer_`` instead of ``vllm:``) so dashboards and autoscalers port over:
gauges read from the engine at scrape time, counters and histograms updated as requests end.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from plugformer.engine import EngineStats, RequestOutput

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 60.0, 120.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class ServerMetrics:
    """Every metric one server exports; :meth:`observe` records a finished request, :meth:`render` a scrape."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.running = Gauge("plugformer_num_requests_running", "sequences decoding in the engine", registry=r)
        self.waiting = Gauge("plugformer_num_requests_waiting", "sequences queued for the engine", registry=r)
        self.kv_usage = Gauge("plugformer_kv_cache_usage_ratio", "fraction of KV-cache blocks in use (0..1)",
                              registry=r)
        self.kv_blocks = Gauge("plugformer_kv_cache_blocks_used", "KV-cache blocks in use", registry=r)
        self.prefix_hit_rate = Gauge("plugformer_prefix_cache_hit_rate", "prefix-cache block hit rate", registry=r)
        self.preemptions = Gauge("plugformer_num_preemptions", "sequences preempted so far", registry=r)
        self.prompt_tokens = Counter("plugformer_prompt_tokens", "prompt tokens of finished requests", registry=r)
        self.generation_tokens = Counter("plugformer_generation_tokens", "tokens generated", registry=r)
        self.success = Counter("plugformer_request_success", "requests answered in full, by finish reason",
                               ["finished_reason"], registry=r)
        self.errors = Counter("plugformer_request_errors", "requests answered with an error, by HTTP status",
                              ["status"], registry=r)
        self.aborted = Counter("plugformer_request_aborted", "requests cancelled (client gone, timeout, shutdown)",
                               registry=r)
        self.ttft = Histogram("plugformer_time_to_first_token_seconds", "arrival to first generated token",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("plugformer_time_per_output_token_seconds", "seconds per generated token after the first",
                              buckets=_TOKEN_BUCKETS, registry=r)
        self.e2e = Histogram("plugformer_e2e_request_latency_seconds", "arrival to last token",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.embedding_requests = Counter("plugformer_embedding_requests", "/v1/embeddings requests answered",
                                          registry=r)
        self.embedding_inputs = Counter("plugformer_embedding_inputs", "texts embedded for /v1/embeddings",
                                        registry=r)
        self.embedding_latency = Histogram("plugformer_embedding_latency_seconds",
                                           "/v1/embeddings: arrival to vectors (waiting for a worker included)",
                                           buckets=_LATENCY_BUCKETS, registry=r)
        self.retrieval_latency = Histogram("plugformer_retrieval_latency_seconds",
                                           "retrieval-augmented chat: retrieving the passages of one request",
                                           buckets=_LATENCY_BUCKETS, registry=r)

    def observe(self, output: RequestOutput) -> None:
        """Count a finished request's tokens and timings (called once per engine request)."""
        generated = sum(len(o.token_ids) for o in output.outputs)
        self.prompt_tokens.inc(len(output.prompt_token_ids))
        self.generation_tokens.inc(generated)
        reason = output.outputs[0].finish_reason if output.outputs else None
        if reason == "abort":
            self.aborted.inc()
            return
        self.success.labels(finished_reason=reason or "stop").inc()
        if output.first_token_time is not None:
            self.ttft.observe(max(0.0, output.first_token_time - output.arrival_time))
            if output.finished_time is not None and generated > len(output.outputs):
                per_token = (output.finished_time - output.first_token_time) / (generated - len(output.outputs))
                self.tpot.observe(max(0.0, per_token))
        if output.finished_time is not None:
            self.e2e.observe(max(0.0, output.finished_time - output.arrival_time))

    def render(self, stats: EngineStats) -> bytes:
        """The text exposition format, with the engine gauges set from ``stats``."""
        self.running.set(stats.running)
        self.waiting.set(stats.waiting)
        self.kv_usage.set(stats.kv_usage)
        self.kv_blocks.set(stats.kv_blocks_used)
        self.prefix_hit_rate.set(stats.prefix_hit_rate)
        self.preemptions.set(stats.preemptions)
        return generate_latest(self.registry)


__all__ = ["ServerMetrics"]
