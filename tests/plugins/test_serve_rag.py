"""``plugformer serve`` with an embedder and an index, told as a client sees it: ``/v1/embeddings`` answers OpenAI's
API (float or base64 vectors, the embedder's own numbers, usage), refuses bad requests with a 4xx naming the field,
sheds load with 429s; a chat completion on a server started with ``rag.index=DIR`` retrieves passages for the last
user message, gives the model exactly the prompt ``plugformer rag`` would, and says which passages it used.

Most stories run the ASGI app in-process with two toy components (a hashing embedder, an exact retriever), so they
test the server alone; the last ones start a real server process with the first-party embedders and retrievers and
talk to it with the ``openai`` client."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from plugformer.errors import PlugformerError
from plugformer.interfaces.retrieval import Chunk
from plugformer.retrieval import Index, rag_prompt
from plugformer.retrieval.rag import fitted_prompt
from plugformer.testing.retrieval_toys import HashConfig, HashEmbedder, toy_registries
from plugformer_serve.app import create_app
from plugformer_serve.command import parse
from plugformer_serve.schemas import OpenAIServerConfig
from plugformer_serve.served_retrieval import ServedRetrieval, load_served_retrieval

sys.path.insert(0, str(Path(__file__).parent))
from serve_fixtures import CONTEXT, ServerProcess, write_tiny_checkpoint  # noqa: E402

TEMPLATE = {"system": "S:{content}\n", "user": "U:{content}\n", "assistant_start": "A:", "assistant_end": "\n"}
FACTS = {
    "x200": "The X200 drill weighs 2.4 kg and is made by Orvan.",
    "tea": "Green tea is steeped at eighty degrees for two minutes.",
    "river": "The Lune river is 90 km long and flows into the bay.",
    "basalt": "Basalt is an igneous rock formed from lava.",
}


@pytest.fixture(scope="module")
def registries():
    return toy_registries()  # the server is tested without any retrieval plugin


def fact_index(registries, facts=FACTS) -> Index:
    index = Index.create(registries, retriever="exact", embedder={"name": "hash", "dim": 64})
    index.add([Chunk(f"{name}#0", text, {"source": f"{name}.md"}) for name, text in facts.items()])
    return index


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_config, builtin_host):
    from plugformer.engine import Engine

    checkpoint = write_tiny_checkpoint(tiny_config, builtin_host.registries, tmp_path_factory.mktemp("rag") / "ckpt")
    return Engine.from_checkpoint(checkpoint, registries=builtin_host.registries, device="cpu")


def greedy(engine, prompt, max_tokens: int) -> str:
    from plugformer.engine import SamplingParams

    return engine.generate(prompt, SamplingParams(max_tokens=max_tokens, temperature=0))[0].outputs[0].text


@contextlib.contextmanager
def prompts_seen(engine, monkeypatch):
    """The prompts (token ids) the engine is asked to run while the block runs."""
    seen: list[list[int]] = []
    original = engine.add_request

    def recording(prompt, params=None, request_id=None):
        seen.append(list(engine.encode(prompt)))
        return original(prompt, params, request_id)

    monkeypatch.setattr(engine, "add_request", recording)
    yield seen
    monkeypatch.undo()


def call(engine, retrieval, requests, chat_template=None, **config):
    """Run ``requests(client)`` against the app in-process; returns its result."""
    app = create_app(engine, OpenAIServerConfig(**config), chat_template=chat_template, retrieval=retrieval)

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve", timeout=60) as client:
            return await requests(client)

    try:
        return asyncio.run(main())
    finally:
        app.state.serve.engine.shutdown(0)


def post(path, body):
    return lambda client: client.post(path, json=body)


# ---- /v1/embeddings ----------------------------------------------------------------------------------------

def test_embeddings_are_the_embedders_vectors_as_floats_or_base64(engine):
    embedder = HashEmbedder(HashConfig(dim=32))
    texts = ["how heavy is the drill", "green tea", "a river"]

    async def requests(client):
        floats = await client.post("/v1/embeddings", json={"model": "hash", "input": texts})
        packed = await client.post("/v1/embeddings", json={"model": "hash", "input": texts,
                                                           "encoding_format": "base64", "dimensions": 32})
        one = await client.post("/v1/embeddings", json={"input": "green tea", "user": "u-1"})
        models = await client.get("/v1/models")
        metrics = await client.get("/metrics")
        return floats, packed, one, models, metrics

    floats, packed, one, models, metrics = call(engine, ServedRetrieval(embedder, "hash"), requests)
    assert floats.status_code == 200, floats.text
    body = floats.json()
    expected = embedder.embed(texts)
    assert body["object"] == "list" and body["model"] == "hash"
    assert [d["index"] for d in body["data"]] == [0, 1, 2] and {d["object"] for d in body["data"]} == {"embedding"}
    assert np.array_equal(np.array([d["embedding"] for d in body["data"]], dtype=np.float32), expected)
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}  # no tokenizer: whitespace words
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed.json()["data"]]
    assert np.array_equal(np.stack(decoded), expected)
    assert one.json()["data"][0]["embedding"] == body["data"][1]["embedding"]  # model defaults to the served one
    assert [m["id"] for m in models.json()["data"]] == ["default", "hash"]
    assert "plugformer_embedding_requests_total 3.0" in metrics.text
    assert "plugformer_embedding_inputs_total 7.0" in metrics.text
    assert "plugformer_embedding_latency_seconds_count 3.0" in metrics.text


def test_usage_counts_the_embedders_own_tokens_and_the_served_name_is_configurable(engine):
    from plugformer_text.byte_tokenizer import ByteTokenizer

    class ByteCounted(HashEmbedder):
        tokenizer = ByteTokenizer(None)

    async def requests(client):
        return (await client.post("/v1/embeddings", json={"model": "kb-embed", "input": ["abc", "de f"]}),
                await client.get("/v1/models/kb-embed"))

    out, card = call(engine, ServedRetrieval(ByteCounted(HashConfig()), "hash"), requests, embedding_model="kb-embed")
    assert out.status_code == 200 and out.json()["model"] == "kb-embed"
    assert out.json()["usage"]["prompt_tokens"] == len("abc") + len("de f")
    assert card.status_code == 200 and card.json()["id"] == "kb-embed"


BAD_EMBEDDINGS = [
    ({"input": 3}, 400, "invalid_type", "input"),
    ({"input": []}, 400, "invalid_type", "input"),
    ({"input": [1, 2, 3]}, 400, "unsupported_input", "input"),
    ({"input": [[1, 2], [3]]}, 400, "unsupported_input", "input"),
    ({"input": ["a", "b", "c", "d"]}, 400, "too_many_inputs", "input"),
    ({"input": ["fine", ""]}, 400, "empty_input", "input"),
    ({"input": "x" * 101}, 413, "input_too_long", "input"),
    ({"input": "!!!"}, 400, "invalid_value", "input"),  # the embedder's own refusal: no words
    ({"input": "a", "encoding_format": "hex"}, 400, "invalid_value", "encoding_format"),
    ({"input": "a", "dimensions": 16}, 400, "invalid_value", "dimensions"),
    ({"input": "a", "dimensions": "all"}, 400, "invalid_type", "dimensions"),
    ({"input": "a", "input_type": "question"}, 400, "invalid_value", "input_type"),
    ({"input": "a", "user": 7}, 400, "invalid_type", "user"),
    ({"input": "a", "model": "text-embedding-3-small"}, 404, "model_not_found", "model"),
]


def test_a_bad_embedding_request_is_a_4xx_naming_the_field(engine):
    async def requests(client):
        return [await client.post("/v1/embeddings", json=body) for body, *_ in BAD_EMBEDDINGS] + \
            [await client.post("/v1/embeddings", content=b"{nope")]

    answers = call(engine, ServedRetrieval(HashEmbedder(HashConfig()), "hash"), requests, embedding_max_inputs=3,
                   embedding_max_chars=100)
    for (body, status, code, param), r in zip(BAD_EMBEDDINGS, answers):
        error = r.json()["error"]
        assert (r.status_code, error["code"], error["param"]) == (status, code, param), (body, r.text)
        assert param in error["message"], error
    assert answers[-1].status_code == 400 and answers[-1].json()["error"]["code"] == "invalid_json"


def test_without_an_embedder_embeddings_are_404_naming_the_model(engine):
    async def requests(client):
        return await client.post("/v1/embeddings", json={"model": "x", "input": "a"}), await client.get("/v1/models")

    r, models = call(engine, None, requests)
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    assert "embedder=NAME" in r.json()["error"]["message"]
    assert [m["id"] for m in models.json()["data"]] == ["default"]


def test_embedding_runs_off_the_event_loop_and_a_saturated_server_answers_429(engine):
    """While one embedding is running (its worker blocked here), the server still answers, and one request more
    than ``server.embedding_max_waiting`` is refused at once with Retry-After."""
    started, release = threading.Event(), threading.Event()

    class Slow(HashEmbedder):
        def embed(self, texts, *, role="passage"):
            started.set()
            release.wait(30)
            return super().embed(texts, role=role)

    async def requests(client):
        first = asyncio.create_task(client.post("/v1/embeddings", json={"input": "slow one"}))
        assert await asyncio.to_thread(started.wait, 10)
        health = await client.get("/health")  # the loop is free while the worker embeds
        refused = await client.post("/v1/embeddings", json={"input": "one more"})
        release.set()
        return await first, health, refused

    first, health, refused = call(engine, ServedRetrieval(Slow(HashConfig()), "hash"), requests,
                                  embedding_max_waiting=1)
    assert health.status_code == 200 and first.status_code == 200
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full" and "embedding_max_waiting" in refused.text


# ---- retrieval-augmented chat ------------------------------------------------------------------------------

def test_rag_chat_answers_from_the_retrieved_passages_with_plugformer_rags_prompt(engine, registries, monkeypatch):
    index = fact_index(registries)
    question = "How much does the X200 drill weigh?"
    with prompts_seen(engine, monkeypatch) as seen:
        r = call(engine, ServedRetrieval(index=index, k=2), post("/v1/chat/completions", {
            "model": "default", "messages": [{"role": "user", "content": question}], "max_tokens": 8,
            "temperature": 0}))
    assert r.status_code == 200, r.text
    body = r.json()
    passages = body["plugformer"]["passages"]
    assert [p["id"] for p in passages] == [h.chunk.id for h in index.search([question], 2)[0]]
    assert passages[0] == {"id": "x200#0", "score": pytest.approx(index.search([question], 1)[0][0].score),
                           "source": "x200.md"}
    expected, _ = fitted_prompt(engine, question, index.search([question], 2)[0], 8)  # what plugformer rag builds
    assert expected == rag_prompt(question, [FACTS["x200"], FACTS[passages[1]["id"].split("#")[0]]])
    assert seen == [engine.encode(expected)]  # plain template: the prompt is exactly plugformer rag's
    assert body["choices"][0]["message"]["content"] == greedy(engine, expected, 8)
    assert body["usage"]["prompt_tokens"] == len(engine.encode(expected))


def test_rag_chat_streams_the_passages_in_the_first_chunk(engine, registries):
    index = fact_index(registries)
    question = "green tea temperature"

    async def requests(client):
        async with client.stream("POST", "/v1/chat/completions", json={
                "messages": [{"role": "user", "content": question}], "max_tokens": 6, "temperature": 0,
                "stream": True, "rag_k": 1}) as r:
            return r.status_code, [line[6:] async for line in r.aiter_lines() if line.startswith("data: ")]

    status, events = call(engine, ServedRetrieval(index=index, k=3), requests)
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [p["id"] for p in chunks[0]["plugformer"]["passages"]] == ["tea#0"]  # rag_k=1
    assert all("plugformer" not in c for c in chunks[1:])
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:])
    assert text == greedy(engine, rag_prompt(question, [FACTS["tea"]]), 6)


def test_the_chat_template_wraps_the_rag_prompt_as_the_users_message(engine, registries, monkeypatch):
    from plugformer.training import ChatTemplate

    index = fact_index(registries)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "Lune river length"}]
    with prompts_seen(engine, monkeypatch) as seen:
        r = call(engine, ServedRetrieval(index=index, k=1), post("/v1/chat/completions", {
            "messages": messages, "max_tokens": 4, "temperature": 0}), chat_template=ChatTemplate(**TEMPLATE))
    assert r.json()["plugformer"]["passages"][0]["id"] == "river#0"
    rag = rag_prompt("Lune river length", [FACTS["river"]])
    assert engine.tokenizer.decode(seen[0]) == f"S:be brief\nU:first question\nA:ok\nU:{rag}\nA:"


def test_passages_that_would_not_fit_the_context_are_dropped_lowest_first(engine, registries, monkeypatch):
    long_facts = {f"doc{i}": f"drill number {i} " + " ".join(f"w{i}x{j}" for j in range(30)) for i in range(6)}
    index = fact_index(registries, long_facts)
    with prompts_seen(engine, monkeypatch) as seen:
        r = call(engine, ServedRetrieval(index=index, k=6), post("/v1/chat/completions", {
            "messages": [{"role": "user", "content": "drill number 3"}], "max_tokens": 200, "temperature": 0}))
    kept = [p["id"] for p in r.json()["plugformer"]["passages"]]
    ranked = [h.chunk.id for h in index.search(["drill number 3"], 6)[0]]
    assert 0 < len(kept) < 6 and kept == ranked[:len(kept)] and kept[0] == "doc3#0"
    assert len(seen[0]) + 200 <= CONTEXT


def test_a_request_may_opt_out_or_choose_k_and_bad_choices_are_400s(engine, registries, monkeypatch):
    index = fact_index(registries)
    user = [{"role": "user", "content": "X200 weight"}]

    async def requests(client):
        async def chat(**fields):
            return await client.post("/v1/chat/completions", json={"messages": user, "max_tokens": 2, **fields})
        return [await chat(rag=False), await chat(rag_k=3), await chat(rag_k=0), await chat(rag="yes"),
                await chat(rag_k=2, temperature=-1), await chat(messages=[{"role": "system", "content": "s"}])]

    with prompts_seen(engine, monkeypatch) as seen:
        off, three, zero, word, bad_temperature, no_user = call(engine, ServedRetrieval(index=index, k=1), requests)
    assert off.status_code == 200 and "plugformer" not in off.json()
    assert seen[0] == engine.encode("X200 weight")  # the message as it is
    assert len(three.json()["plugformer"]["passages"]) == 3
    assert (zero.status_code, zero.json()["error"]["param"]) == (400, "rag_k")
    assert (word.status_code, word.json()["error"]["param"]) == (400, "rag")
    assert (bad_temperature.status_code, bad_temperature.json()["error"]["param"]) == (400, "temperature")
    assert (no_user.status_code, no_user.json()["error"]["param"]) == (400, "messages")


def test_retrieval_shares_the_bounded_workers_so_a_saturated_server_refuses_rag_chat_with_a_real_429(engine,
                                                                                                    registries):
    started, release = threading.Event(), threading.Event()

    class Slow(HashEmbedder):
        def embed(self, texts, *, role="passage"):
            started.set()
            release.wait(30)
            return super().embed(texts, role=role)

    index = fact_index(registries)
    index.embedder = Slow(HashConfig(dim=64))  # embeds like the index's own, slowly

    async def requests(client):
        first = asyncio.create_task(client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "X200"}], "max_tokens": 2}))
        assert await asyncio.to_thread(started.wait, 10)
        async with client.stream("POST", "/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "tea"}], "max_tokens": 2, "stream": True}) as r:
            refused = (r.status_code, r.headers.get("retry-after"), json.loads(await r.aread()))
        release.set()
        return await first, refused

    first, (status, retry_after, error) = call(engine, ServedRetrieval(index=index, k=1), requests,
                                               embedding_max_waiting=1)
    assert first.status_code == 200 and first.json()["plugformer"]["passages"][0]["id"] == "x200#0"
    assert (status, retry_after, error["error"]["code"]) == (429, "1", "queue_full")


def test_without_an_index_asking_for_retrieval_is_a_400_and_completions_never_retrieve(engine, registries):
    index = fact_index(registries)

    async def requests(client):
        return (await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}],
                                                                 "rag": True, "max_tokens": 2}),
                await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}],
                                                                 "rag": False, "max_tokens": 2}))

    asked, declined = call(engine, None, requests)
    assert asked.status_code == 400 and asked.json()["error"]["param"] == "rag"
    assert "rag.index" in asked.json()["error"]["message"] and declined.status_code == 200
    completion = call(engine, ServedRetrieval(index=index), post("/v1/completions", {
        "prompt": "X200 weight", "max_tokens": 3, "temperature": 0}))
    assert "plugformer" not in completion.json()
    assert completion.json()["choices"][0]["text"] == greedy(engine, "X200 weight", 3)


# ---- plugformer serve's settings ---------------------------------------------------------------------------

@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    (tmp_path / "ckpt").mkdir()
    return tmp_path / "ckpt"


@pytest.mark.parametrize("args, words", [
    (["rag.k=3"], ["rag.k", "rag.index=DIR"]),
    (["search.nprobe=8"], ["search.nprobe", "rag.index=DIR"]),
    (["embedder.device=cpu"], ["embedder.device", "embedder=NAME"]),
    (["rag.index=/no/such/index"], ["rag.index", "/no/such/index", "not a directory"]),
    (["rag.index={tmp}", "rag.k=0"], ["rag.k", ">= 1"]),
    (["rag.index={tmp}", "rag.template=Q: {question}"], ["{passages}"]),
    (["rag.index={tmp}", "search=faiss"], ["search", "options only"]),
    (["server.embedding_workers=0"], ["server.embedding_workers", ">= 1"]),
    (["server.embedding_max_chars=lots"], ["server.embedding_max_chars", "whole number"]),
    (["rag.idx=x"], ["rag.idx", "did you mean", "rag.index"]),
])
def test_bad_retrieval_settings_are_one_line_errors_naming_the_key(ckpt, tmp_path, args, words):
    with pytest.raises(PlugformerError) as err:
        parse([f"checkpoint={ckpt}", *(a.replace("{tmp}", str(tmp_path)) for a in args)])
    assert "\n" not in str(err.value) and all(w in str(err.value) for w in words), str(err.value)


def test_retrieval_settings_become_the_embedder_node_the_rag_settings_and_search_options(ckpt, tmp_path):
    settings = parse([f"checkpoint={ckpt}", f"rag.index={tmp_path}", "rag.k=2", "rag.template=Q {question}\\n"
                      "{passages}", "embedder.device=cpu", "search.nprobe=8", "server.embedding_model=kb"])
    assert settings["rag"] == {"index": tmp_path, "k": 2, "template": "Q {question}\n{passages}"}
    assert settings["embedder"] == {"name": "recorded", "device": "cpu"} and settings["search"] == {"nprobe": 8}
    assert settings["server"] == {"name": "openai", "embedding_model": "kb"}
    plain = parse([f"checkpoint={ckpt}", "embedder=wordllama", "embedder.dim=64"])
    assert plain["embedder"] == {"name": "wordllama", "dim": 64} and plain["rag"] is None
    assert parse([f"checkpoint={ckpt}"])["embedder"] is None


def test_the_index_brings_its_own_embedder_and_a_different_one_is_refused(registries, tmp_path):
    fact_index(registries).save(tmp_path / "idx")
    served = load_served_retrieval(registries, {"name": "recorded"}, tmp_path / "idx", k=3)
    assert served.embedder is served.index.embedder and served.embedder_name == "hash" and served.k == 3
    assert served.embedder.identity() == {"name": "hash", "dim": 64, "salt": ""}
    with pytest.raises(PlugformerError, match="salt") as err:
        load_served_retrieval(registries, {"name": "recorded", "salt": "other"}, tmp_path / "idx")
    assert "\n" not in str(err.value)
    with pytest.raises(PlugformerError, match="nprobe"):
        load_served_retrieval(registries, None, tmp_path / "idx", search_options={"nprobe": 8})
    alone = load_served_retrieval(registries, {"name": "hash", "dim": 16}, None)
    assert alone.index is None and alone.embedder.dim == 16 and alone.embedder_name == "hash"
    assert load_served_retrieval(registries, None, None) is None


def test_the_embedding_model_may_not_take_a_generation_models_name(engine):
    with pytest.raises(PlugformerError, match="server.embedding_model"):
        create_app(engine, OpenAIServerConfig(embedding_model="default"),
                   retrieval=ServedRetrieval(HashEmbedder(HashConfig()), "hash"))


def test_a_lexical_index_serves_embeddings_only_from_an_embedder_given_beside_it(builtin_host, tmp_path):
    _first_party("retriever", "bm25", builtin_host)
    _first_party("embedder", "wordllama", builtin_host)
    registries = builtin_host.registries
    index = Index.create(registries, retriever="bm25")
    index.add([Chunk(f"{name}#0", text, {"source": f"{name}.md"}) for name, text in FACTS.items()])
    index.save(tmp_path / "idx")
    alone = load_served_retrieval(registries, None, tmp_path / "idx")
    assert alone.embedder is None and alone.index.search(["X200 drill"], 1)[0][0].chunk.id == "x200#0"
    beside = load_served_retrieval(registries, {"name": "wordllama", "dim": 64}, tmp_path / "idx")
    assert beside.embedder.dim == 64 and beside.embedder_name == "wordllama" and beside.index.embedder is None
    with pytest.raises(PlugformerError, match="lexical"):
        load_served_retrieval(registries, {"name": "recorded", "device": "cpu"}, tmp_path / "idx")


# ---- a real server process and the openai client (needs the first-party embedder and retriever plugins) ----

def _first_party(family: str, name: str, builtin_host) -> None:
    if name not in builtin_host.registries[family]:
        pytest.skip(f"the {family} plugin '{name}' is not installed (plugformer_embed / plugformer_retrieval)")
    ok, reason = builtin_host.registries[family].get(name).availability()
    if not ok:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def served_checkpoint(tmp_path_factory, tiny_config, builtin_host) -> Path:
    return write_tiny_checkpoint(tiny_config, builtin_host.registries, tmp_path_factory.mktemp("rag-serve") / "ckpt")


def test_a_pooled_checkpoint_embeds_and_counts_its_own_tokens(engine, served_checkpoint, builtin_host):
    _first_party("embedder", "pooled", builtin_host)
    from plugformer.retrieval import build_embedder

    pooled = build_embedder(builtin_host.registries, {"name": "pooled", "checkpoint": str(served_checkpoint),
                                                      "device": "cpu"})
    texts = ["def main():", "import os"]
    out = call(engine, ServedRetrieval(pooled, "pooled"), post("/v1/embeddings", {"model": "pooled", "input": texts}))
    assert out.status_code == 200, out.text
    vectors = np.array([d["embedding"] for d in out.json()["data"]], dtype=np.float32)
    assert np.allclose(vectors, pooled.embed_all(texts), atol=1e-6)
    assert out.json()["usage"]["prompt_tokens"] == len("def main():") + len("import os")  # byte tokenizer


@pytest.fixture(scope="module")
def rag_server(served_checkpoint, builtin_host, tmp_path_factory):
    """``plugformer serve checkpoint=C rag.index=idx/ rag.k=2`` on an index of the facts built with ``wordllama``
    (64 dimensions) and ``faiss``: the index's embedder is served on ``/v1/embeddings`` too."""
    _first_party("embedder", "wordllama", builtin_host)
    _first_party("retriever", "faiss", builtin_host)
    from plugformer.retrieval import Chunker, read_documents

    root = tmp_path_factory.mktemp("rag-kb")
    (root / "kb").mkdir()
    for name, text in FACTS.items():
        (root / "kb" / f"{name}.md").write_text(text)
    index = Index.create(builtin_host.registries, retriever="faiss", embedder={"name": "wordllama", "dim": 64})
    index.sync(read_documents(root / "kb"), Chunker())
    index.save(root / "idx")  # what plugformer index build data.path=kb/ embedder=wordllama ... writes
    proc = ServerProcess(served_checkpoint, f"rag.index={root / 'idx'}", "rag.k=2", log=root / "server.log")
    yield proc
    proc.stop()


def openai_client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.mark.slow
def test_the_openai_client_embeds_with_the_served_embedder(rag_server, builtin_host):
    import openai

    from plugformer.retrieval import build_embedder

    texts = ["How do I open a file?", "list comprehension"]
    expected = build_embedder(builtin_host.registries, {"name": "wordllama", "dim": 64}).embed_all(texts)
    client = openai_client(rag_server)
    assert [m.id for m in client.models.list().data] == ["default", "wordllama"]
    packed = client.embeddings.create(model="wordllama", input=texts)  # the client asks for base64 by default
    floats = client.embeddings.create(model="wordllama", input=texts, encoding_format="float")
    for out in (packed, floats):
        assert [d.index for d in out.data] == [0, 1]
        assert np.allclose(np.array([d.embedding for d in out.data], dtype=np.float32), expected, atol=1e-6)
    assert packed.usage.prompt_tokens == sum(len(t.split()) for t in texts)  # wordllama: words
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="wordllama", input="x", dimensions=32)
    assert rag_server.metric("plugformer_embedding_requests_total") == 2


@pytest.mark.slow
def test_a_server_started_on_an_index_answers_chat_from_its_passages(rag_server):
    client = openai_client(rag_server)
    out = client.chat.completions.create(model="default", max_tokens=8, temperature=0,
                                         messages=[{"role": "user", "content": "What does the X200 drill weigh?"}])
    passages = out.model_extra["plugformer"]["passages"]
    assert len(passages) == 2 and passages[0]["id"] == "x200.md#0" and passages[0]["source"] == "x200.md"
    assert out.choices[0].message.content is not None and out.usage.prompt_tokens > 0
    stream = list(client.chat.completions.create(model="default", max_tokens=4, temperature=0, stream=True,
                                                 messages=[{"role": "user", "content": "green tea"}],
                                                 extra_body={"rag_k": 1}))
    assert [p["id"] for p in stream[0].model_extra["plugformer"]["passages"]] == ["tea.md#0"]
    assert rag_server.metric("plugformer_retrieval_latency_seconds_count") == 2
