"""``plugformer serve``, told as a user of the OpenAI client sees it: a real server process on a loopback port
answers the official client (sync, async, streaming) with exactly what the engine gives each request alone,
refuses bad requests with a 4xx naming the field, sheds load with 429s, cancels work whose client left or
whose time ran out, and exits 0 on SIGTERM after finishing what was in flight."""
from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from serve_fixtures import CONTEXT, ServerProcess, write_tiny_checkpoint  # noqa: E402

pytestmark = pytest.mark.slow

KEYS = ("key-one", "key-two")
TEMPLATE = {"system": "S:{content}\n", "user": "U:{content}\n", "assistant_start": "A:", "assistant_end": "\n"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_config, builtin_host) -> Path:
    return write_tiny_checkpoint(tiny_config, builtin_host.registries, tmp_path_factory.mktemp("serve") / "ckpt",
                                 template=TEMPLATE)


@pytest.fixture(scope="module")
def reference(checkpoint, builtin_host):
    """The same checkpoint in this process's engine: what each request gives alone."""
    from plugformer.engine import Engine, SamplingParams

    engine = Engine.from_checkpoint(checkpoint, registries=builtin_host.registries, device="cpu")

    def alone(prompt: str, max_tokens: int, **params) -> str:
        out = engine.generate(prompt, SamplingParams(max_tokens=max_tokens, temperature=0, **params))
        return out[0].outputs[0].text

    return alone


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    proc = ServerProcess(checkpoint, "server.api_key=[key-one,key-two]", "server.max_batch=8", log=log)
    yield proc
    proc.stop()


def client(server, key: str = KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=30)


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_openai_client_gets_what_the_engine_gives_the_request_alone(server, reference):
    c = client(server)
    out = c.completions.create(model="default", prompt="def main(", max_tokens=12, temperature=0)
    assert out.choices[0].text == reference("def main(", 12)
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens == len("def main(") and out.usage.completion_tokens <= 12
    again = client(server, KEYS[1]).completions.create(model="default", prompt="def main(", max_tokens=12,
                                                        temperature=0)
    assert again.choices[0].text == out.choices[0].text  # the second key works too


def test_chat_uses_the_template_the_checkpoint_was_fine_tuned_with(server, reference):
    c = client(server)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    out = c.chat.completions.create(model="default", messages=messages, max_tokens=10, temperature=0)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == reference("S:be brief\nU:hi\nA:", 10)
    assert out.usage.prompt_tokens == len("S:be brief\nU:hi\nA:")


def test_streaming_chunks_add_up_to_the_full_answer_and_end_with_usage(server, reference):
    c = client(server)
    chunks = list(c.completions.create(model="default", prompt="import os\n", max_tokens=16, temperature=0,
                                       stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == reference("import os\n", 16)
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == len("import os\n")
    chat = list(c.chat.completions.create(model="default", messages=[{"role": "user", "content": "x"}],
                                          max_tokens=8, temperature=0, stream=True))
    assert chat[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chat) == reference("U:x\nA:", 8)
    assert chat[-1].choices[0].finish_reason in ("stop", "length")


def test_the_async_client_n_samples_seed_stop_and_logprobs(server):
    async def main():
        c = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS[0], max_retries=0)
        sampled = await c.completions.create(model="default", prompt="x = ", max_tokens=8, n=3, seed=7,
                                             temperature=1.0, logprobs=2)
        again = await c.completions.create(model="default", prompt="x = ", max_tokens=8, n=3, seed=7,
                                           temperature=1.0, logprobs=2)
        chat = await c.chat.completions.create(model="default", messages=[{"role": "user", "content": "q"}],
                                               max_tokens=5, temperature=0, logprobs=True, top_logprobs=3)
        await c.close()
        return sampled, again, chat

    sampled, again, chat = asyncio.run(main())
    assert sorted(ch.index for ch in sampled.choices) == [0, 1, 2]
    assert [ch.text for ch in sampled.choices] == [ch.text for ch in again.choices]  # seeded
    lp = sampled.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) and all(v <= 0 for v in lp.token_logprobs)
    content = chat.choices[0].logprobs.content
    assert content and all(len(t.top_logprobs) == 3 and t.logprob <= 0 for t in content)


def test_models_lists_the_base_model_and_unknown_models_are_404_naming_them(server):
    c = client(server)
    assert [m.id for m in c.models.list().data] == ["default"]
    with pytest.raises(openai.NotFoundError, match="nope"):
        c.completions.create(model="nope", prompt="x", max_tokens=2)


BAD = [
    (b"{not json", "invalid_json", None),
    (json.dumps({"model": "default", "prompt": 3}), "invalid_type", "prompt"),
    (json.dumps({"model": "default", "prompt": ""}), "empty_prompt", "prompt"),
    (json.dumps({"model": "default", "prompt": "x", "temperature": -1}), "invalid_value", "temperature"),
    (json.dumps({"model": "default", "prompt": "x", "max_tokens": "ten"}), "invalid_type", "max_tokens"),
    (json.dumps({"model": "default", "prompt": "x", "max_tokens": 0}), "invalid_value", "max_tokens"),
    (json.dumps({"model": "default", "prompt": "x", "top_p": 2}), "invalid_value", "top_p"),
    (json.dumps({"model": "default", "prompt": "x", "n": 0}), "invalid_value", "n"),
    (json.dumps({"model": "default", "prompt": "x", "stop": [1]}), "invalid_type", "stop"),
    (json.dumps({"model": "default", "prompt": "x" * 400, "max_tokens": 200}), "context_length_exceeded", "prompt"),
    (json.dumps({"model": "default", "prompt": [999999]}), "invalid_value", "prompt"),
    (json.dumps({"model": "default", "prompt": "x", "suffix": "y"}), "unsupported_parameter", "suffix"),
    (json.dumps({"model": "default", "prompt": "x", "logit_bias": {"1": 5}}), "unsupported_parameter",
     "logit_bias"),
    (json.dumps({"model": "default", "prompt": "x", "response_format": {"type": "yaml"}}), "invalid_value",
     "response_format"),
]


@pytest.mark.parametrize("body, code, param", BAD)
def test_a_bad_completion_request_is_a_400_naming_the_field(server, body, code, param):
    with server.client(headers={"authorization": f"Bearer {KEYS[0]}"}) as http:
        r = http.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param and "Traceback" not in r.text
    if param:
        assert param in error["message"]


def test_bad_chat_requests_unsupported_fields_auth_size_and_routes(server):
    auth = {"authorization": f"Bearer {KEYS[0]}"}
    with server.client() as http:
        def post(path, body, headers=auth):
            return http.post(path, json=body, headers=headers)

        tools = post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "x"}],
                                               "tools": [{"type": "function"}]})
        assert tools.status_code == 400 and tools.json()["error"]["param"] == "tools"
        role = post("/v1/chat/completions", {"model": "default", "messages": [{"role": "tool", "content": "x"}]})
        assert role.status_code == 400 and role.json()["error"]["param"] == "messages[0].role"
        empty = post("/v1/chat/completions", {"model": "default", "messages": []})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"
        long = post("/v1/chat/completions", {"model": "default", "messages": [{"role": "user", "content": "x" * 600}]})
        assert long.status_code == 400 and str(CONTEXT) in long.json()["error"]["message"]
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": KEYS[0]}):
            r = post("/v1/completions", {"model": "default", "prompt": "x"}, headers)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        huge = http.post("/v1/completions", content=b"x" * 1_100_000, headers=auth)
        assert huge.status_code == 413 and "limit" in huge.json()["error"]["message"]
        missing = http.get("/v1/nothing", headers=auth)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert http.get("/health").status_code == 200 and http.get("/ready").json()["status"] == "ready"


def test_the_request_id_is_echoed_and_logged_as_json(server):
    with server.client(headers={"authorization": f"Bearer {KEYS[0]}"}) as http:
        r = http.post("/v1/completions", json={"model": "default", "prompt": "abc", "max_tokens": 3},
                      headers={"x-request-id": "trace-42"})
        made = http.post("/v1/completions", json={"model": "default", "prompt": "abc", "max_tokens": 3})
    assert r.headers["x-request-id"] == "trace-42" and made.headers["x-request-id"]
    assert wait_for(lambda: "trace-42" in server.log.read_text())
    line = next(json.loads(row) for row in server.log.read_text().splitlines() if "trace-42" in row)
    assert line["status"] == 200 and line["model"] == "default" and line["prompt_tokens"] == 3
    assert line["completion_tokens"] == r.json()["usage"]["completion_tokens"] and line["latency_s"] >= 0


def test_32_parallel_clients_each_get_what_their_request_gives_alone(server, reference):
    prompts = [f"v{i} = " for i in range(32)]

    async def main():
        c = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEYS[0], max_retries=0, timeout=60)
        outs = await asyncio.gather(*(c.completions.create(model="default", prompt=p, max_tokens=10, temperature=0)
                                      for p in prompts))
        await c.close()
        return [o.choices[0].text for o in outs]

    assert asyncio.run(main()) == [reference(p, 10) for p in prompts]


def test_a_client_that_leaves_cancels_its_generation_and_frees_the_cache(server):
    aborted = server.metric("plugformer_request_aborted_total")
    body = {"model": "default", "prompt": "abc", "max_tokens": 500, "ignore_eos": True, "temperature": 0}
    headers = {"authorization": f"Bearer {KEYS[0]}"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json={**body, "stream": True}, headers=headers) as r:
            assert r.status_code == 200
            next(r.iter_lines())  # the first chunk arrived; now leave
    with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up
        httpx.post(f"{server.url}/v1/completions", json={**body, "n": 16}, headers=headers, timeout=0.3)
    assert wait_for(lambda: server.metric("plugformer_request_aborted_total") >= aborted + 2)
    assert wait_for(lambda: server.metric("plugformer_num_requests_running") == 0)
    assert server.metric("plugformer_kv_cache_blocks_used") == 0
    assert server.metric("plugformer_kv_cache_usage_ratio") == 0


def test_metrics_count_tokens_and_latencies(server):
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("plugformer_num_requests_running", "plugformer_num_requests_waiting",
                 "plugformer_kv_cache_usage_ratio", "plugformer_prompt_tokens_total",
                 "plugformer_generation_tokens_total", 'plugformer_request_success_total{finished_reason="length"}',
                 "plugformer_time_to_first_token_seconds_count", "plugformer_time_per_output_token_seconds_count",
                 "plugformer_e2e_request_latency_seconds_count"):
        assert name in text, name
    assert server.metric("plugformer_generation_tokens_total") > 0


def test_overload_is_shed_with_429_before_any_200_and_nothing_hangs(checkpoint, tmp_path):
    proc = ServerProcess(checkpoint, "server.max_batch=1", "server.max_waiting=1", "server.timeout_s=0.2",
                         log=tmp_path / "overload.log")
    try:
        body = {"model": "default", "prompt": "abc", "max_tokens": 500, "ignore_eos": True, "temperature": 0}
        statuses: list[int] = []
        retry_after: list[str | None] = []

        def one(stream: bool) -> None:
            with httpx.Client(base_url=proc.url, timeout=30) as http:
                with http.stream("POST", "/v1/completions", json={**body, "stream": stream}) as r:
                    r.read()
                    statuses.append(r.status_code)
                    retry_after.append(r.headers.get("retry-after") if r.status_code == 429 else None)

        threads = [threading.Thread(target=one, args=(i % 2 == 0,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
        assert 429 in statuses and set(statuses) <= {200, 408, 429}
        assert all(a == "1" for s, a in zip(statuses, retry_after) if s == 429)
        assert wait_for(lambda: proc.metric("plugformer_num_requests_running") == 0
                        and proc.metric("plugformer_num_requests_waiting") == 0)
        timed_out = httpx.post(f"{proc.url}/v1/completions", json=body, timeout=30)  # 500 tokens: > 0.2 s
        assert timed_out.status_code == 408 and "timeout_s" in timed_out.json()["error"]["message"], timed_out.text
        assert wait_for(lambda: proc.metric("plugformer_num_requests_running") == 0)
        assert proc.metric("plugformer_kv_cache_blocks_used") == 0
        short = httpx.post(f"{proc.url}/v1/completions", json={**body, "max_tokens": 2}, timeout=30)
        assert short.status_code == 200
    finally:
        proc.stop()


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(checkpoint, tmp_path):
    proc = ServerProcess(checkpoint, "server.grace_s=20", log=tmp_path / "term.log")
    try:
        body = {"model": "default", "prompt": "abc", "max_tokens": 120, "ignore_eos": True, "n": 4, "stream": True}
        with httpx.Client(base_url=proc.url, timeout=30) as http:
            with http.stream("POST", "/v1/completions", json=body) as r:
                lines = r.iter_lines()
                next(lines)
                proc.proc.send_signal(__import__("signal").SIGTERM)
                assert wait_for(lambda: httpx.get(f"{proc.url}/ready").status_code == 503, 5)
                refused = httpx.post(f"{proc.url}/v1/completions", json={"prompt": "x"}, timeout=10)
                assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
                rest = list(lines)
        assert "data: [DONE]" in rest
        assert proc.proc.wait(timeout=30) == 0
    finally:
        proc.stop()


def test_response_format_json_schema_constrains_the_output(server):
    schema = {"type": "string", "enum": ["yes", "no"]}
    out = client(server).chat.completions.create(
        model="default", messages=[{"role": "user", "content": "ok?"}], max_tokens=200, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}})
    assert json.loads(out.choices[0].message.content) in ("yes", "no"), out.choices[0]
    assert out.choices[0].finish_reason == "stop"


def test_adapters_are_listed_and_selected_by_model_name(checkpoint, reference, tmp_path):
    """With multi-adapter serving (``Engine.add_adapter``), ``server.adapters`` loads LoRA adapters that a
    request selects by ``model``; without it, the setting is refused in one line (exit 2)."""
    import subprocess

    from plugformer.engine import Engine

    if not hasattr(Engine, "add_adapter"):
        proc = subprocess.run([sys.executable, "-m", "plugformer", "serve", f"checkpoint={checkpoint}",
                               "device=cpu", f"server.adapters={{up: {tmp_path}}}"], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("plugformer: error:")
        assert "server.adapters" in proc.stderr and "add_adapter" in proc.stderr
        return
    run = tmp_path / "lora"
    subprocess.run([sys.executable, "-m", "plugformer", "finetune", f"checkpoint={checkpoint}", "data=uppercase",
                    "data.n_train=32", "data.n_val=4", "data.seq_len=32", "trainer.batch_size=4", "adapter=lora",
                    "adapter.r=2", "trainer.max_steps=2", "eval_examples=2", "max_new_tokens=2", "threads=1",
                    f"hydra.run.dir={run}"], check=True, capture_output=True, text=True, timeout=300)
    adapter = run / "checkpoints" / "last" / "adapter"
    proc = ServerProcess(checkpoint, f"server.adapters={{up: {adapter}}}", log=tmp_path / "adapters.log")
    try:
        c = client(proc, "x")
        assert [m.id for m in c.models.list().data] == ["default", "up"]
        tuned = c.completions.create(model="up", prompt="up abc=", max_tokens=6, temperature=0).choices[0].text
        base = c.completions.create(model="default", prompt="up abc=", max_tokens=6, temperature=0).choices[0].text
        assert base == reference("up abc=", 6)
        from plugformer import get_registries
        from plugformer.engine import SamplingParams

        alone = Engine.from_checkpoint(checkpoint, registries=get_registries(), device="cpu", adapter=adapter)
        expected = alone.generate("up abc=", SamplingParams(max_tokens=6, temperature=0))[0].outputs[0].text
        assert tuned == expected
    finally:
        proc.stop()


def test_a_batch_of_prompts_gives_n_choices_per_prompt_in_order(server, reference):
    out = client(server).completions.create(model="default", prompt=["def a(", [105, 109, 112]], n=2,
                                            max_tokens=6, temperature=0)
    texts = {ch.index: ch.text for ch in out.choices}
    assert texts == {0: reference("def a(", 6), 1: reference("def a(", 6), 2: reference("imp", 6),
                     3: reference("imp", 6)}
    assert out.usage.prompt_tokens == len("def a(") + 3
