"""The inference engine: many requests in flight, one forward pass per step over all of them.

One loop you can hold in your head (:meth:`Engine.step`)::

    take in new requests and cancellations
    plan = scheduler.schedule()                # who decodes, who prefills how much, who is preempted
    logits = model(decode rows) ; model(prefill chunks)   # ragged batches over the paged KV cache
    for each row whose tokens are all computed: sample its next token, check its stop conditions
    offer newly full blocks to the prefix cache; free finished sequences' blocks
    return what each request gained (stream deltas)

:meth:`generate` and :meth:`stream` drive that loop for callers that hold the engine themselves; a
server drives it from its own thread and feeds :meth:`add_request`/:meth:`abort` from others
(both are thread-safe).
"""
from __future__ import annotations

import contextlib
import itertools
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from plugformer.engine.blocks import BlockPool
from plugformer.engine.kv import DecodeBatch, DecodeBuffers, PagedBatch, PagedKVCache
from plugformer.engine.layout import pack_linear_weights, packing_unavailable, transpose_linear_weights
from plugformer.engine.outputs import RequestOutput, StreamDelta
from plugformer.engine.params import SamplingParams
from plugformer.engine.sampler import apply_penalties, draw, token_logprobs
from plugformer.engine.scheduler import QueueFull, Scheduler
from plugformer.engine.sequence import Request
from plugformer.engine.sequence import Sequence as Seq
from plugformer.engine.speculative import Speculator, eligible
from plugformer.engine.support import check_ragged_support
from plugformer.engine.text import TextTracker
from plugformer.errors import ConfigError
from plugformer.generation import context_length
from plugformer.interfaces import Tokenizer
from plugformer.precision import autocast
from plugformer.registry import Registries

#: default KV-cache size in tokens when neither ``kv_cache_tokens`` nor a GPU memory fraction decides it
DEFAULT_KV_CACHE_TOKENS = 32768


@dataclass(frozen=True)
class EngineStats:
    """A snapshot for metrics: sequences running and waiting, KV-cache blocks and bytes in use, and the
    prefix cache's hit rate."""

    running: int
    waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    kv_bytes_used: int
    kv_usage: float
    prefix_hit_rate: float
    preemptions: int
    #: bytes of the dense decode buffers (:class:`~plugformer.engine.kv.DecodeBuffers`), on top of the pool
    kv_decode_buffer_bytes: int = 0


def _model_shape(model: nn.Module) -> tuple[int, int, int]:
    """(layers, kv heads, head dim) of a plugformer Transformer (or a module holding one)."""
    for module in model.modules():
        dims, blocks = getattr(module, "dims", None), getattr(module, "blocks", None)
        if dims is not None and blocks is not None:
            return len(blocks), dims.n_kv_heads, dims.head_dim
    raise ConfigError(f"the inference engine needs a plugformer Transformer, got {type(model).__name__}")


def _flag(name: str, value: Any, default: bool) -> bool:
    """A boolean knob; None means ``default``."""
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"Engine {name}={value!r} must be true, false or None (automatic)")
    return value


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Engine {name}={value!r} must be an integer >= 1")
    return value


#: prefill rows share one forward pass while padding adds at most this fraction of computed positions
PREFILL_PADDING = 0.25


def _padding_groups(rows: list[tuple[Seq, int]]) -> list[list[tuple[Seq, int]]]:
    """Prefill chunks grouped into forward passes: rows padded to the longest of their group, so rows of
    similar length go together (sorted by length, a group grows while padding stays under
    :data:`PREFILL_PADDING` of its positions)."""
    groups: list[list[tuple[Seq, int]]] = []
    for row in sorted(rows, key=lambda r: r[1], reverse=True):
        if groups:
            group = groups[-1]
            real = sum(n for _, n in group) + row[1]
            if group[0][1] * (len(group) + 1) <= (1 + PREFILL_PADDING) * real:
                group.append(row)
                continue
        groups.append([row])
    return groups


class Engine:
    """Continuous batching over a paged KV cache with prefix caching; see :mod:`plugformer.engine`.

    Knobs: ``max_batch`` (sequences in flight at once), ``kv_cache_tokens`` (the pool's size in
    tokens; on CUDA, default: ``gpu_memory_fraction`` of the free memory), ``block_size`` (tokens per
    block), ``max_prefill_tokens`` (prompt tokens computed per step, shared by all prefills),
    ``max_waiting`` (queued sequences before :class:`QueueFull`), ``prefix_caching``. ``draft`` (a model
    with the same tokenizer) turns on speculative decoding of ``num_speculative_tokens`` per step for
    greedy requests; ``guide`` names the structured-output plugin that enforces ``SamplingParams.structured``.
    ``decode_buffers`` keeps decoding rows' keys and values in dense buffers across steps instead of
    gathering them from the pool every step (:class:`~plugformer.engine.kv.DecodeBuffers`; default: on
    a CPU, where the gather is bound by memory bandwidth); ``pack_weights`` makes the model's Linear layers
    compute products of two or more rows through oneDNN packed copies of their weights, 1.5-2.5x faster for
    batched decoding (:func:`~plugformer.engine.layout.pack_linear_weights`; default: on a CPU whose
    PyTorch has oneDNN); ``transpose_weights`` stores the widening Linear weights transposed in memory,
    the layout the CPU's matrix-vector kernels read a single row fastest
    (:func:`~plugformer.engine.layout.transpose_linear_weights`; default: on a CPU).
    """

    def __init__(self, model: nn.Module, tokenizer: Tokenizer, *, device: torch.device | str | None = None,
                 precision: str = "fp32", max_batch: int = 64, kv_cache_tokens: int | None = None,
                 block_size: int = 16, max_prefill_tokens: int = 512, max_waiting: int = 1024,
                 prefix_caching: bool = True, gpu_memory_fraction: float = 0.5,
                 registries: Registries | None = None, draft: nn.Module | None = None,
                 num_speculative_tokens: int = 4, guide: str | dict = "llguidance",
                 decode_buffers: bool | None = None, pack_weights: bool | None = None,
                 transpose_weights: bool | None = None):
        if registries is None:
            from plugformer import get_registries
            registries = get_registries()
        check_ragged_support(model, registries)
        self.model, self.tokenizer, self.precision, self.registries = model.eval(), tokenizer, precision, registries
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.context = context_length(model)
        if self.context is None:
            raise ConfigError("the inference engine needs a model that declares max_seq_len")
        max_batch, block_size = _check_positive("max_batch", max_batch), _check_positive("block_size", block_size)
        max_prefill_tokens = _check_positive("max_prefill_tokens", max_prefill_tokens)
        max_waiting = _check_positive("max_waiting", max_waiting)
        layers, kv_heads, head_dim = _model_shape(model)
        dtype = torch.bfloat16 if getattr(precision, "value", precision) == "bf16" else next(model.parameters()).dtype
        if not dtype.is_floating_point:
            dtype = torch.float32
        bytes_per_token = 2 * layers * kv_heads * head_dim * torch.empty((), dtype=dtype).element_size()
        tokens = self._pool_tokens(kv_cache_tokens, gpu_memory_fraction, bytes_per_token)
        num_blocks = -(-tokens // block_size) + 1  # + the reserved zero block
        self.pool = BlockPool(num_blocks, block_size)
        self.cache = PagedKVCache(layers, kv_heads, head_dim, num_blocks, block_size, self.device, dtype)
        on_cpu = self.device.type == "cpu"
        self.buffers = DecodeBuffers(self.cache, max_batch, self.context) if _flag(
            "decode_buffers", decode_buffers, on_cpu) else None
        why_not_pack = packing_unavailable() if on_cpu else f"the device is {self.device}, not a CPU"
        pack = _flag("pack_weights", pack_weights, why_not_pack is None)
        if pack and why_not_pack is not None:
            raise ConfigError(f"Engine pack_weights=True cannot apply: {why_not_pack}")
        transpose = _flag("transpose_weights", transpose_weights, on_cpu)
        for net in (self.model, draft):
            if net is not None and transpose:
                transpose_linear_weights(net)
            if net is not None and pack:
                pack_linear_weights(net)
        self.speculator = self._speculator(draft, num_speculative_tokens, num_blocks, block_size)
        caches = [self.cache] + ([self.speculator.cache] if self.speculator is not None else [])
        self.scheduler = Scheduler(self.pool, caches, max_batch=max_batch,
                                   max_prefill_tokens=max_prefill_tokens, max_waiting=max_waiting,
                                   prefix_caching=prefix_caching,
                                   lookahead=self.speculator.k if self.speculator is not None else 0)
        self.requests: dict[str, Request] = {}
        self._lock = threading.RLock()
        self._aborts: deque[str] = deque()
        self._ids = itertools.count()
        self._route = None  # set by add_adapter: routes batch rows through their adapters
        self._guide_node, self._guide = guide, None  # structured output: built on first use

    def _speculator(self, draft: nn.Module | None, k: int, num_blocks: int, block_size: int) -> Speculator | None:
        if draft is None:
            return None
        check_ragged_support(draft, self.registries)
        k = _check_positive("num_speculative_tokens", k)
        vocab, draft_vocab = self.model.lm_head.out_features, draft.lm_head.out_features
        if vocab != draft_vocab:
            raise ConfigError(f"the draft model's vocabulary ({draft_vocab} tokens) differs from the target's "
                              f"({vocab}): speculative decoding needs the same tokenizer")
        draft_context = context_length(draft)
        if draft_context is not None and draft_context < self.context:
            raise ConfigError(f"the draft model's context ({draft_context} tokens) is shorter than the target's "
                              f"({self.context})")
        layers, kv_heads, head_dim = _model_shape(draft)
        cache = PagedKVCache(layers, kv_heads, head_dim, num_blocks, block_size, self.device, self.cache.dtype)
        return Speculator(draft.to(self.device), cache, k, self.device, self.precision)

    def _pool_tokens(self, kv_cache_tokens: int | None, fraction: float, bytes_per_token: int) -> int:
        if kv_cache_tokens is not None:
            return _check_positive("kv_cache_tokens", kv_cache_tokens)
        if self.device.type == "cuda":
            if not 0 < fraction <= 1:
                raise ConfigError(f"Engine gpu_memory_fraction={fraction!r} must be in (0, 1]")
            free, _ = torch.cuda.mem_get_info(self.device)
            return max(self.context, int(free * fraction) // bytes_per_token)
        return DEFAULT_KV_CACHE_TOKENS

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, registries: Registries | None = None, device: str = "auto",
                        precision: str = "fp32", adapter: str | Path | None = None, draft: str | Path | None = None,
                        **knobs: Any) -> Engine:
        """An engine over the checkpoint at ``path`` (a ``checkpoints/step-N``/``last`` directory, a run
        directory, a merged, quantized or imported checkpoint), loaded by
        :func:`plugformer.checkpoint.load_model_for_inference` (with ``adapter`` applied unmerged), and
        optionally a ``draft`` checkpoint with the same tokenizer for speculative decoding."""
        from plugformer import get_registries
        from plugformer.checkpoint import load_model_for_inference

        registries = registries or get_registries()
        loaded = load_model_for_inference(path, registries, adapter=adapter, device=device)
        if draft is not None:
            drafted = load_model_for_inference(draft, registries, device=str(loaded.device))
            if drafted.tokenizer.fingerprint() != loaded.tokenizer.fingerprint():
                raise ConfigError(f"the draft checkpoint {draft} has another tokenizer than {path}: speculative "
                                  "decoding needs the same one")
            knobs["draft"] = drafted.model
        return cls(loaded.model, loaded.tokenizer, device=loaded.device, precision=precision,
                   registries=registries, **knobs)

    # ---- requests ---------------------------------------------------------------------------------------

    def encode(self, prompt: str | Sequence[int]) -> list[int]:
        """Token ids of a text prompt (a list of ids passes through, checked against the vocabulary)."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        ids = list(prompt)
        vocab = self.model.tok_emb.num_embeddings
        bad = next((i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab), None)
        if bad is not None:
            raise ConfigError(f"prompt token id {bad!r} is not in the vocabulary (0 .. {vocab - 1})")
        return ids

    def add_request(self, prompt: str | Sequence[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> str:
        """Queue a prompt (text or token ids); returns its request id. Raises :class:`ConfigError` for a
        prompt that cannot fit (naming the numbers) and :class:`QueueFull` when the queue is full."""
        params = params or SamplingParams()
        ids = self.encode(prompt)
        if not ids:
            ids = [self.tokenizer.eos_id]  # a document boundary, as in the training data
        from plugformer.config.ranges import check_prompt_fits
        check_prompt_fits(len(ids), params.max_tokens, self.context, name="max_tokens")
        capacity = self.pool.capacity * self.pool.block_size
        if len(ids) + params.max_tokens > capacity:
            raise ConfigError(f"the prompt ({len(ids)} tokens) plus max_tokens={params.max_tokens} needs more KV "
                              f"cache than the engine has (kv_cache_tokens={capacity})")
        if params.adapter is not None and (self._route is None or params.adapter not in self._route.names()):
            loaded = ", ".join(self._route.names()) if self._route is not None else "none"
            raise ConfigError(f"adapter {params.adapter!r} is not loaded (loaded adapters: {loaded})")
        with self._lock:
            request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
            if request_id in self.requests:
                raise ConfigError(f"request id {request_id!r} is already in flight")
            request = Request(request_id, prompt if isinstance(prompt, str) else None, ids, params)
            base_seed = params.seed if params.seed is not None else secrets.randbits(62)
            first = None
            for i in range(params.n):
                generator = None if params.greedy else torch.Generator(self.device).manual_seed(base_seed + i)
                seq = Seq(request, i, TextTracker(self.tokenizer, ids, params.stop, params.include_stop_str_in_output),
                          generator, self._matcher(params), wait_for=first)
                request.sequences.append(seq)
                first = first or seq
            self.scheduler.add(request.sequences)
            self.requests[request_id] = request
        return request_id

    def add_adapter(self, name: str, directory: str | Path) -> None:
        """Load the LoRA adapter saved in ``directory`` under ``name``, unmerged, beside any already loaded;
        requests choose it with ``SamplingParams(adapter=name)`` and rows of one batch may use different
        adapters (or none). Refused in one line: a taken or bad name, a directory that is not an adapter,
        an adapter plugin without the ``multi_adapter`` capability."""
        from plugformer.engine.adapters import AdapterSet

        with self._lock:
            if self._route is None:
                self._route = AdapterSet(self.model, self.registries)
            self._route.add(name, directory)  # the adapters live inside the base's layers: self.model stays

    def adapters(self) -> list[str]:
        """The names of the loaded adapters."""
        return self._route.names() if self._route is not None else []

    def _matcher(self, params: SamplingParams) -> Any:
        """A fresh structured-output matcher for ``params.structured`` (a GuideSpec), or None."""
        if params.structured is None:
            return None
        from plugformer.interfaces import GuideSpec, build_guide

        if not isinstance(params.structured, GuideSpec):
            raise ConfigError(f"SamplingParams.structured must be a plugformer.interfaces.GuideSpec, got "
                              f"{type(params.structured).__name__}")
        if self._guide is None:
            self._guide = build_guide(self.registries, self._guide_node, self.tokenizer,
                                      vocab_size=self.model.lm_head.out_features)
        return self._guide.compile(params.structured)

    def abort(self, request_id: str) -> None:
        """Cancel a request: its sequences finish with ``abort`` and free their blocks at the next step."""
        self._aborts.append(request_id)

    def has_unfinished(self) -> bool:
        return any(not r.finished for r in self.requests.values())

    def stats(self) -> EngineStats:
        pool = self.pool
        used = pool.num_used()
        return EngineStats(len(self.scheduler.running), len(self.scheduler.waiting), used, pool.capacity,
                           used * pool.block_size * self.cache.bytes_per_token, pool.usage(),
                           pool.hits / pool.queries if pool.queries else 0.0, self.scheduler.num_preemptions,
                           self.buffers.bytes_used if self.buffers is not None else 0)

    # ---- the loop ---------------------------------------------------------------------------------------

    def step(self) -> list[StreamDelta]:
        """One scheduling round and forward pass; returns every delta it produced."""
        with self._lock:
            self._apply_aborts()
            plan = self.scheduler.schedule()
            while not plan and self.scheduler.running:  # everyone stuck on blocks: free the newest's
                self.scheduler.preempt_newest(plan)
                plan = self.scheduler.schedule()
        sampling: list[tuple[Seq, Tensor]] = []
        decode, gains = plan.decode, []
        if self.speculator is not None and decode:
            gains, decode = self._speculate(decode)
        if decode:
            sampling += self._forward([(s, s.to_compute) for s in decode], decoding=True)
        elif self.buffers is not None:
            self.buffers.clear()  # nobody decodes: give the memory back (rows are refilled from the pool)
        for group in _padding_groups(plan.prefill):
            sampling += self._forward(group)
        with self._lock:
            for seq, tokens in gains:
                for token in tokens:
                    if seq.finished:
                        break
                    self._append(seq, token)
            self._sample(sampling)
            for seq in plan.decode + [s for s, _ in plan.prefill]:
                self.scheduler.register_full_blocks(seq)
            deltas = self._collect()
            self.scheduler.remove_finished()
            if self.buffers is not None and not self.scheduler.running:
                self.buffers.clear()
        return deltas

    def _apply_aborts(self) -> None:
        while self._aborts:
            request = self.requests.get(self._aborts.popleft())
            if request is None:
                continue
            for seq in request.sequences:
                if not seq.finished:
                    seq.finish("abort")
            request.finished_time = request.finished_time or time.monotonic()
        self.scheduler.remove_finished()

    def _router(self, seqs: list[Seq]) -> contextlib.AbstractContextManager:
        if self._route is None:
            return contextlib.nullcontext()
        return self._route.route(self.model, [s.params.adapter for s in seqs])

    def _speculate(self, decode: list[Seq]) -> tuple[list[tuple[Seq, list[int]]], list[Seq]]:
        """Draft-and-verify the rows speculation serves; returns their gained tokens and the other rows."""
        spec = [s for s in decode if eligible(s) and not s.finished]
        rest = [s for s in decode if s not in spec]
        k = min([self.speculator.k] + [self.context - len(s.tokens) for s in spec]) if spec else 0
        if k < 1:
            return [], decode
        drafts = self.speculator.propose(spec, k)
        gains = self.speculator.verify(self.model, self.cache, spec, drafts, self._router(spec))
        return list(zip(spec, gains)), rest

    @torch.no_grad()
    def _forward(self, rows: list[tuple[Seq, int]], decoding: bool = False) -> list[tuple[Seq, Tensor]]:
        """Compute ``n`` tokens of each row's sequence; the logits of rows that are then up to date.
        ``decoding``: this step's decode rows (one token each), read through the decode buffers."""
        if self.speculator is not None:
            self.speculator.prefill(rows)  # the draft's cache follows every token the target computes
        dense = decoding and self.buffers is not None and all(n == 1 for _, n in rows)
        if dense:
            rows = [rows[i] for i in self.buffers.place([s for s, _ in rows])]
        elif decoding and self.buffers is not None:
            self.buffers.clear()
        width = max(n for _, n in rows)
        tokens = torch.tensor([s.tokens[s.num_computed:s.num_computed + n] + [0] * (width - n) for s, n in rows],
                              device=self.device)
        if dense:
            batch = DecodeBatch(self.buffers, [s.blocks for s, _ in rows], [s.num_computed for s, _ in rows])
        else:
            batch = PagedBatch(self.cache, [s.blocks for s, _ in rows], [s.num_computed for s, _ in rows],
                               [n for _, n in rows])
        with self._router([s for s, _ in rows]), autocast(self.device, self.precision):
            logits = self.model(tokens, cache=batch, logits_at=batch.last_token_index())
        ready = []
        for (seq, n), row in zip(rows, logits.float()):
            seq.num_computed += n
            if seq.to_compute == 0:
                ready.append((seq, row))
        return ready

    def _sample(self, rows: list[tuple[Seq, Tensor]]) -> None:
        simple = [i for i, (s, _) in enumerate(rows) if s.params.greedy and not s.params.penalised
                  and s.matcher is None and s.logprobs is None and not s.finished]
        argmax = torch.stack([rows[i][1] for i in simple]).argmax(-1).tolist() if simple else []
        chosen = dict(zip(simple, argmax))
        for i, (seq, raw) in enumerate(rows):
            if seq.finished:  # aborted while its forward pass ran
                continue
            token = chosen.get(i)
            if token is None:
                logits = raw
                if seq.params.penalised:
                    logits = apply_penalties(logits, seq.params, seq.tokens[:seq.prompt_len], seq.output_ids)
                if seq.matcher is not None:
                    logits = logits.masked_fill(~seq.matcher.allowed().to(logits.device), float("-inf"))
                token = draw(logits, seq.params, seq.generator)
                if seq.logprobs is not None:
                    value, entry = token_logprobs(raw, token, seq.params.logprobs or 0,
                                                  lambda t: self.tokenizer.decode([t]))
                    seq.logprobs.append(entry)
                    seq.cumulative_logprob += value
            self._append(seq, token)

    def _append(self, seq: Seq, token: int) -> None:
        """Add a sampled token to ``seq`` and decide whether it is done."""
        params, request = seq.params, seq.request
        if request.first_token_time is None:
            request.first_token_time = time.monotonic()
        if seq.matcher is not None:
            seq.matcher.accept(token)
        if token == self.tokenizer.eos_id and (not params.ignore_eos or seq.matcher is not None):
            self._drop_last_logprob(seq)
            return self._finish(seq, "stop")
        if token in params.stop_token_ids:
            self._drop_last_logprob(seq)
            return self._finish(seq, "stop", token)
        seq.tokens.append(token)
        stop = seq.tracker.add(token)
        if stop is not None:
            return self._finish(seq, "stop", stop)
        if seq.matcher is not None and seq.matcher.is_finished:
            return self._finish(seq, "stop")
        if len(seq.tokens) - seq.prompt_len >= params.max_tokens or len(seq.tokens) >= self.context:
            return self._finish(seq, "length")

    @staticmethod
    def _drop_last_logprob(seq: Seq) -> None:
        """The stop token is not part of the output, so neither is its logprob."""
        if seq.logprobs:
            seq.logprobs.pop()

    def _finish(self, seq: Seq, reason: str, stop_reason: str | int | None = None) -> None:
        seq.finish(reason, stop_reason)  # type: ignore[arg-type]
        if seq.request.finished:
            seq.request.finished_time = time.monotonic()

    def _collect(self) -> list[StreamDelta]:
        deltas = []
        for request in list(self.requests.values()):
            for seq in request.sequences:
                delta = seq.delta()
                if delta is not None:
                    deltas.append(delta)
        return deltas

    # ---- driving the loop -------------------------------------------------------------------------------

    def generate(self, prompts: str | Sequence[int] | Iterable[str | Sequence[int]],
                 params: SamplingParams | Sequence[SamplingParams] | None = None,
                 progress: Any = None) -> list[RequestOutput]:
        """Run every prompt to completion; one :class:`RequestOutput` per prompt, in order. ``params`` is
        one :class:`SamplingParams` for all or one per prompt. The longest prompts are submitted first (an
        output never depends on the others; rows of similar length batch better). ``progress(done, total)`` is called as
        requests finish (e.g. a progress bar's update)."""
        if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        prompts = list(prompts)  # type: ignore[arg-type]
        per_prompt = [params] * len(prompts) if params is None or isinstance(params, SamplingParams) else list(params)
        if len(per_prompt) != len(prompts):
            raise ConfigError(f"{len(prompts)} prompts but {len(per_prompt)} SamplingParams")
        # longest prompts first (characters or token ids): sequences of similar length then take neighbouring
        # rows of the decode batch, and attention reads each group of rows only up to its longest
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # type: ignore[arg-type]
        pending: deque[tuple[int, Any, Any]] = deque((i, prompts[i], per_prompt[i]) for i in order)
        ids: list[str | None] = [None] * len(prompts)
        done = 0
        try:
            while pending or any(not self.requests[r].finished for r in ids if r is not None):
                while pending:  # keep the queue fed without overflowing it
                    i, prompt, sp = pending[0]
                    try:
                        ids[i] = self.add_request(prompt, sp)
                    except QueueFull:
                        break
                    pending.popleft()
                self.step()
                if progress is not None:
                    now = sum(1 for r in ids if r is not None and self.requests[r].finished)
                    if now != done:
                        progress(now, len(prompts))
                        done = now
            return [self.requests[r].output() for r in ids]  # type: ignore[index]
        finally:
            for r in ids:
                if r is not None:
                    self.release(r)

    def stream(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> Iterator[StreamDelta]:
        """Generate for one prompt, yielding each :class:`StreamDelta` as soon as its step ends. Closing
        the iterator early aborts the request."""
        request_id = self.add_request(prompt, params)
        try:
            while not self.requests[request_id].finished:
                for delta in self.step():
                    if delta.request_id == request_id:
                        yield delta
        finally:
            if not self.requests[request_id].finished:
                self.abort(request_id)
                self.step()
            self.release(request_id)

    def release(self, request_id: str) -> None:
        """Forget a finished request (its output stays available until then; generate and stream
        release their own)."""
        with self._lock:
            request = self.requests.get(request_id)
            if request is not None and request.finished:
                del self.requests[request_id]

    def output(self, request_id: str) -> RequestOutput:
        """The current :class:`RequestOutput` of a request in flight (or finished and not yet forgotten)."""
        return self.requests[request_id].output()


__all__ = ["DEFAULT_KV_CACHE_TOKENS", "Engine", "EngineStats", "QueueFull"]
