"""Embedders: a user turns a plugformer checkpoint (``pooled``) or WordLlama's packaged model (``wordllama``) into
a bi-encoder for retrieval, by config, and gets unit vectors that do not depend on how texts are batched.

The checkpoints are the conformance kit's tiny random models (one block over bytes), written by the core's
checkpoint writer in a module fixture; WordLlama loads the weights inside its wheel, never the network.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

from plugformer import ConfigError, get_registries
from plugformer.retrieval import build_embedder
from plugformer.testing.construct import tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["def add(a, b):\n    return a + b", "Return the sum of two numbers.", "x",
         "a somewhat longer passage, so the batch has to be padded around the short ones"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``plain``: a random tiny model; ``other``: another seed; ``contrastive``: the plain weights under a config
    that records ``objective.pooling: last``, as a contrastively trained checkpoint does."""
    root = tmp_path_factory.mktemp("embedder-checkpoints")
    return {"plain": tiny_checkpoint(root / "plain"), "other": tiny_checkpoint(root / "other", seed=1),
            "contrastive": tiny_checkpoint(root / "contrastive", records={"objective": {"pooling": "last"}})}


def pooled(checkpoint: Path, **options: object):
    return build_embedder(get_registries(), {"name": "pooled", "checkpoint": str(checkpoint), "device": "cpu",
                                             **options})


def unit_rows(vectors: np.ndarray, rows: int, dim: int) -> None:
    assert vectors.dtype == np.float32 and vectors.shape == (rows, dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def one_line_error(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- pooled --------------------------------------------------------------------------------------------------------

def test_a_saved_checkpoint_embeds_texts_as_unit_vectors_independent_of_the_batch(checkpoints):
    embedder = pooled(checkpoints["plain"], batch_size=2)
    assert embedder.dim == 32 and embedder.pooling == "mean"
    assert embedder.max_tokens == 16  # the kit model's data.seq_len: the longest text it was trained on
    together = embedder.embed(TEXTS)
    unit_rows(together, len(TEXTS), 32)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(embedder.embed([text])[0], together[i], atol=1e-5)
    np.testing.assert_allclose(embedder.embed_all(TEXTS * 3, progress=True), np.concatenate([together] * 3), atol=1e-5)


def test_a_model_whose_attention_cannot_mask_padding_embeds_one_text_at_a_time(checkpoints, monkeypatch):
    import plugformer_embed.pooled

    batched = pooled(checkpoints["plain"]).embed(TEXTS)
    monkeypatch.setattr(plugformer_embed.pooled, "_masks_padding", lambda config, registries: False)
    embedder = pooled(checkpoints["plain"])
    rows: list[int] = []
    embedder.model.tok_emb.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    np.testing.assert_allclose(embedder.embed(TEXTS), batched, atol=1e-5)
    assert rows == [1] * len(TEXTS)


def test_the_identity_is_the_checkpoints_content_not_its_path(checkpoints, tmp_path):
    identity = pooled(checkpoints["plain"]).identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity["name"] == "pooled" and identity["dim"] == 32 and len(identity["checkpoint"]) == 64
    moved = tmp_path / "copied"
    shutil.copytree(checkpoints["plain"], moved)
    assert pooled(moved).identity() == identity  # same files elsewhere: the same embedder
    other = pooled(checkpoints["other"])
    assert other.identity()["checkpoint"] != identity["checkpoint"]
    assert not np.allclose(other.embed(TEXTS), pooled(checkpoints["plain"]).embed(TEXTS), atol=1e-3)
    for option, value in (("pooling", "last"), ("max_tokens", 8), ("query_prefix", "q: ")):
        changed = pooled(checkpoints["plain"], **{option: value}).identity()
        assert changed != identity and changed[option] == value


def test_mean_and_last_pooling_differ_and_both_are_unit(checkpoints):
    mean = pooled(checkpoints["plain"], pooling="mean").embed(TEXTS)
    last = pooled(checkpoints["plain"], pooling="last").embed(TEXTS)
    unit_rows(mean, len(TEXTS), 32)
    unit_rows(last, len(TEXTS), 32)
    assert not np.allclose(mean[[0, 1, 3]], last[[0, 1, 3]], atol=1e-3)
    np.testing.assert_allclose(mean[2], last[2], atol=1e-5)  # one token: its mean is itself


def test_a_contrastively_trained_checkpoint_embeds_with_the_pooling_it_was_trained_with(checkpoints):
    recorded = pooled(checkpoints["contrastive"])
    assert recorded.pooling == "last" and recorded.identity()["pooling"] == "last"
    np.testing.assert_allclose(recorded.embed(TEXTS), pooled(checkpoints["plain"], pooling="last").embed(TEXTS),
                               atol=1e-6)
    assert pooled(checkpoints["contrastive"], pooling="mean").pooling == "mean"  # the user's choice wins


def test_long_texts_are_cut_to_max_tokens(checkpoints):
    embedder = pooled(checkpoints["plain"], max_tokens=8)
    np.testing.assert_allclose(embedder.embed(["abcdefghijklmnop"]), embedder.embed(["abcdefgh"]), atol=1e-6)
    longest = pooled(checkpoints["plain"], max_tokens=64).embed(["z" * 500])  # past the model's 64 positions: cut
    unit_rows(longest, 1, 32)


def test_instruction_prefixes_make_queries_and_passages_embed_differently(checkpoints):
    embedder = pooled(checkpoints["plain"], query_prefix="query: ", passage_prefix="passage: ")
    query, passage = embedder.embed(TEXTS, role="query"), embedder.embed(TEXTS, role="passage")
    assert not np.allclose(query, passage, atol=1e-3)
    plain = pooled(checkpoints["plain"])
    np.testing.assert_allclose(query, plain.embed(["query: " + t for t in TEXTS]), atol=1e-6)
    np.testing.assert_allclose(plain.embed(TEXTS, role="query"), plain.embed(TEXTS, role="passage"))


def test_a_missing_checkpoint_is_one_line_naming_it(tmp_path):
    missing = tmp_path / "runs" / "nope"
    with pytest.raises(ConfigError) as error:
        pooled(missing)
    assert str(missing) in one_line_error(error)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as error:
        pooled(tmp_path / "empty")
    assert str(tmp_path / "empty") in one_line_error(error)
    with pytest.raises(ConfigError) as error:
        build_embedder(get_registries(), "pooled")
    assert "embedder.checkpoint" in one_line_error(error)


def test_bad_options_are_one_line_naming_the_choices(checkpoints):
    with pytest.raises(ConfigError) as error:
        pooled(checkpoints["plain"], pooling="max")
    assert "'max'" in one_line_error(error) and "mean, last" in str(error.value)
    with pytest.raises(ConfigError) as error:
        pooled(checkpoints["plain"], max_tokens=65)
    assert "max_seq_len=64" in one_line_error(error)
    with pytest.raises(ConfigError) as error:
        pooled(checkpoints["plain"], max_tokens=0)
    assert "max_tokens" in one_line_error(error)
    with pytest.raises(ConfigError) as error:
        pooled(checkpoints["plain"]).embed(["fine", ""])
    assert "text 1" in one_line_error(error)


# --- wordllama -----------------------------------------------------------------------------------------------------

needs_wordllama = pytest.mark.skipif(importlib.util.find_spec("wordllama") is None,
                                     reason="wordllama is not installed (pip install 'plugformer[embed]')")


@pytest.fixture(scope="module")
def wordllama():
    return build_embedder(get_registries(), "wordllama")


@needs_wordllama
def test_wordllama_ranks_a_related_text_above_unrelated_ones(wordllama):
    questions = ["how do I parse command-line flags", "what is the boiling point of water",
                 "how to sort a list in reverse order"]
    passages = ["The argparse module makes it easy to write user-friendly command-line interfaces with options and "
                "arguments.", "Water boils at 100 degrees Celsius at sea level.",
                "list.sort(reverse=True) sorts the items of the list in descending order."]
    scores = wordllama.embed(questions, role="query") @ wordllama.embed(passages).T
    assert (scores.argmax(axis=1) == np.arange(3)).all(), scores


@needs_wordllama
def test_wordllama_gives_normalised_float32_rows_and_smaller_matryoshka_dims(wordllama):
    full = wordllama.embed(TEXTS)
    unit_rows(full, len(TEXTS), 256)
    small = build_embedder(get_registries(), {"name": "wordllama", "dim": 64})
    assert small.identity() == {**wordllama.identity(), "dim": 64}
    prefix = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    np.testing.assert_allclose(small.embed(TEXTS), prefix, atol=1e-5)
    with pytest.raises(ConfigError) as error:
        build_embedder(get_registries(), {"name": "wordllama", "dim": 100})
    assert "64, 128, 256" in one_line_error(error)
    with pytest.raises(ConfigError) as error:
        build_embedder(get_registries(), {"name": "wordllama", "config": "l3_supercat"})
    assert "l2_supercat" in one_line_error(error)


@needs_wordllama
def test_wordllama_works_with_the_network_blocked(monkeypatch, tmp_path):
    import requests
    import tokenizers

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use while loading wordllama: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(requests, "get", refuse)
    monkeypatch.setattr(requests.Session, "request", refuse)
    monkeypatch.setattr(tokenizers.Tokenizer, "from_pretrained", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/wordllama to fall back on
    embedder = build_embedder(get_registries(), {"name": "wordllama", "dim": 128})
    unit_rows(embedder.embed(TEXTS), len(TEXTS), 128)


@needs_wordllama
def test_importing_wordllama_leaves_the_process_logging_alone():
    """wordllama calls ``logging.basicConfig(level=INFO)`` when imported, which would print every library's INFO
    lines; a fresh import through the plugin leaves the root logger as it was."""
    from plugformer_embed.wordllama_embedder import import_wordllama

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loaded = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "wordllama"}
    try:
        for handler in handlers:  # pytest's capture handlers would make basicConfig a no-op
            root.removeHandler(handler)
        for name in loaded:
            del sys.modules[name]
        import_wordllama()
        assert root.handlers == [] and root.level == level
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "wordllama"]:
            del sys.modules[name]
        sys.modules.update(loaded)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


# --- configs -------------------------------------------------------------------------------------------------------

@needs_wordllama
def test_the_embedder_config_options_compose_to_their_schemas(checkpoints):
    from hydra import compose, initialize_config_module
    from hydra.core.config_store import ConfigStore

    from plugformer.config import prepare
    from plugformer.config.store import SCHEMA_GROUP, node_class

    host = prepare()
    store = ConfigStore.instance()
    for entry in host.registries.embedder:
        store.store(group=f"{SCHEMA_GROUP}/embedder", name=entry.name, node=node_class(entry))
    store.store(name="test_embedders_probe", node={"defaults": [{"embedder": "pooled"}]})
    assert sorted(p.stem for p in (REPO / "conf" / "embedder").glob("*.yaml")) == ["pooled", "wordllama"]
    with initialize_config_module(config_module="plugformer.conf", version_base="1.3"):
        cfg = compose("test_embedders_probe", overrides=[f"embedder.checkpoint={checkpoints['plain']}",
                                                         "embedder.pooling=last", "embedder.device=cpu"])
        assert pooled(checkpoints["plain"], pooling="last").identity() == \
            build_embedder(host.registries, cfg.embedder).identity()
        cfg = compose("test_embedders_probe", overrides=["embedder=wordllama", "embedder.dim=128"])
        assert build_embedder(host.registries, cfg.embedder).dim == 128
