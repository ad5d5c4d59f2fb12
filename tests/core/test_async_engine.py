"""The engine behind an asyncio server: many coroutines get exactly what each request gives alone, a full
queue is refused before anything runs, leaving early frees the cache, an idle engine sleeps, shutdown
drains or cancels."""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
import torch

from plugformer.engine import Engine, QueueFull, SamplingParams
from plugformer.engine.async_engine import AsyncEngine, EngineStopped
from plugformer.errors import ConfigError
from plugformer_text.byte_tokenizer import ByteTokenizer

GREEDY = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
PROMPTS = ["def main(", "import os\n", "x", "class Parser(object):\n", "for i in ra", "return None"]


@pytest.fixture
def engine(builtin_host, tiny_config):
    def make(**knobs) -> Engine:
        cfg = tiny_config().copy()
        cfg.model.max_seq_len = 64
        cfg.model.init_std = 0.3
        torch.manual_seed(0)
        from plugformer.model import build_model

        tokenizer = ByteTokenizer(None)
        net = build_model(cfg, builtin_host.registries, tokenizer.vocab_size)
        return Engine(net, tokenizer, registries=builtin_host.registries, **knobs)

    return make


async def collect(async_engine: AsyncEngine, prompt: str, params: SamplingParams = GREEDY) -> list[int]:
    stream = await async_engine.generate(prompt, params)
    ids: list[int] = []
    async for delta in stream:
        ids += delta.token_ids
    assert stream.finished and stream.output is not None
    return ids


def test_concurrent_coroutines_each_get_what_the_request_gives_alone(engine):
    alone = [out.outputs[0].token_ids for out in engine(max_batch=8).generate(PROMPTS, GREEDY)]
    served = AsyncEngine(engine(max_batch=3, block_size=4))

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(collect(served, p) for p in PROMPTS))

    try:
        assert asyncio.run(main()) == alone
        assert served.engine.stats().kv_blocks_used == 0 and not served.engine.requests
    finally:
        served.shutdown()


def test_a_full_queue_and_a_prompt_too_long_are_refused_at_admission(engine):
    served = AsyncEngine(engine(max_batch=1, max_waiting=1))
    long_run = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)

    async def main() -> None:
        streams = [await served.generate("a", long_run)]
        with pytest.raises(QueueFull):
            for _ in range(3):  # one runs, one waits, the next cannot queue
                streams.append(await served.generate("b", long_run))
        with pytest.raises(ConfigError, match="max_tokens"):
            await served.generate("x" * 60, SamplingParams(max_tokens=10))
        for stream in streams:
            await stream.aclose()

    try:
        asyncio.run(main())
    finally:
        served.shutdown()


def test_leaving_a_stream_early_aborts_the_request_and_frees_its_blocks(engine):
    served = AsyncEngine(engine(max_batch=2))

    async def main() -> str | None:
        stream = await served.generate("def main(", SamplingParams(max_tokens=50, temperature=0, ignore_eos=True))
        async with contextlib.aclosing(stream):
            async for _ in stream:
                break
        for _ in range(200):
            if served.num_in_flight == 0:
                break
            await asyncio.sleep(0.01)
        return stream.output.outputs[0].finish_reason if stream.output else None

    try:
        asyncio.run(main())
        assert served.num_in_flight == 0
        stats = served.engine.stats()
        assert stats.running == 0 and stats.kv_blocks_used == 0 and not served.engine.requests
    finally:
        served.shutdown()


def test_an_idle_engine_sleeps_instead_of_stepping(engine):
    served = AsyncEngine(engine())
    try:
        asyncio.run(collect(served, "abc"))
        before = served.steps
        time.sleep(0.2)
        assert served.steps == before
    finally:
        served.shutdown()


def test_shutdown_lets_in_flight_requests_finish_within_the_grace_period_then_refuses(engine):
    served = AsyncEngine(engine())

    async def main() -> None:
        stream = await served.generate("def main(", GREEDY)
        await asyncio.to_thread(served.shutdown, 30.0)
        reasons = [d.finish_reason async for d in stream if d.finish_reason]
        assert reasons == ["length"]
        with pytest.raises(EngineStopped):
            await served.generate("x", GREEDY)

    asyncio.run(main())
    assert not served.accepting


def test_shutdown_without_grace_cancels_what_is_still_running(engine):
    served = AsyncEngine(engine())

    async def main() -> None:
        stream = await served.generate("def main(", SamplingParams(max_tokens=50, temperature=0, ignore_eos=True))
        await asyncio.to_thread(served.shutdown, 0.0)
        reasons = [d.finish_reason async for d in stream if d.finish_reason]
        assert reasons == ["abort"]

    asyncio.run(main())
    assert served.engine.stats().kv_blocks_used == 0
