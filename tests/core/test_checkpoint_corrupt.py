"""A user points plugformer at a broken or hostile checkpoint: every case is one line naming the file and
what is wrong with it (a ConfigError, ``plugformer: error: ...`` and exit 2 on the command line), never a
traceback, and nothing in the artifact is resolved or executed."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from plugformer.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    TOKENIZER_DIR,
    attach_adapter,
    load_config,
    load_model,
    load_model_for_inference,
    save_model,
)
from plugformer.errors import ConfigError

FIXTURE = Path(__file__).parents[1] / "data" / "checkpoint-v1"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    """A copy of the small committed checkpoint, free to break."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "ckpt"))


def refused(checkpoint: Path, registries, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_model_for_inference(checkpoint, registries, device="cpu", **kwargs)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_the_intact_copy_loads(checkpoint, builtin_host):
    loaded = load_model_for_inference(checkpoint, builtin_host.registries, device="cpu")
    assert loaded.tokenizer.vocab_size == loaded.model.tok_emb.weight.shape[0]


@pytest.mark.parametrize("damage, reason", [
    (lambda b: b[: len(b) // 2], "incomplete metadata"),
    (lambda b: b"", "header too small"),
    (lambda b: struct.pack("<Q", 2**40) + b[8:], "header too large"),
    (lambda b: struct.pack("<Q", 12) + b"not json!!!!" + b[20:], "invalid JSON"),
], ids=["truncated", "zero-byte", "huge-header", "garbage-header"])
def test_a_damaged_weights_file_is_named_with_its_problem(checkpoint, builtin_host, damage, reason):
    file = checkpoint / MODEL_FILE
    file.write_bytes(damage(file.read_bytes()))
    message = refused(checkpoint, builtin_host.registries)
    assert str(file) in message and "not a readable safetensors file" in message and reason in message


@pytest.mark.parametrize("text, problem", [
    ("", "is empty"),
    ("model: [1, 2\n", "not a readable YAML config"),
    ("just some words\n", "holds a str, not a mapping"),
    ("- a\n- b\n", "holds a list, not a mapping"),
    (b"\x00\x01\xff\xfe", "not a readable YAML config"),
    ("seed: 1\n", "has no valid 'tokenizer' node"),
], ids=["empty", "bad-yaml", "scalar", "list", "binary", "no-tokenizer"])
def test_an_empty_or_garbage_config_is_named(checkpoint, builtin_host, text, problem):
    file = checkpoint / CONFIG_FILE
    file.write_bytes(text if isinstance(text, bytes) else text.encode())
    message = refused(checkpoint, builtin_host.registries)
    assert str(file) in message and problem in message


def test_an_interpolation_in_an_artifact_config_is_never_resolved(checkpoint, builtin_host, monkeypatch, capsys):
    monkeypatch.setenv("PLUGFORMER_TEST_SECRET", "hunter2")
    file = checkpoint / CONFIG_FILE
    file.write_text(file.read_text().replace("name: byte", "name: ${oc.env:PLUGFORMER_TEST_SECRET}", 1))
    message = refused(checkpoint, builtin_host.registries)
    assert "'tokenizer.name' holds an interpolation" in message and str(file) in message
    assert "hunter2" not in message and "hunter2" not in "".join(capsys.readouterr())
    with pytest.raises(ConfigError, match="never resolves interpolations"):
        load_config(checkpoint)


def test_a_yaml_python_tag_is_refused_not_constructed(checkpoint):
    (checkpoint / CONFIG_FILE).write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not a readable YAML config"):
        load_config(checkpoint)


def test_weights_that_no_longer_fit_the_config_name_the_tensor(checkpoint, builtin_host):
    file = checkpoint / CONFIG_FILE
    file.write_text(file.read_text().replace("d_model: 16", "d_model: 32"))
    message = refused(checkpoint, builtin_host.registries)
    assert str(checkpoint / MODEL_FILE) in message and "does not match the model its config.yaml describes" in message
    assert "'tok_emb.weight' is (259, 16) in the file but (259, 32)" in message


def test_weights_missing_a_tensor_name_it(checkpoint, builtin_host):
    state = load_model(checkpoint)
    dropped = "norm_f.weight"
    del state[dropped]
    save_model(checkpoint, state)
    assert f"e.g. '{dropped}'" in refused(checkpoint, builtin_host.registries)


def test_a_missing_tokenizer_directory_is_named(checkpoint, builtin_host):
    shutil.rmtree(checkpoint / TOKENIZER_DIR)
    message = refused(checkpoint, builtin_host.registries)
    assert f"has no {TOKENIZER_DIR}/ directory" in message and str(checkpoint) in message


def test_a_foreign_tokenizer_is_named(checkpoint, builtin_host):
    tokenizer_file = checkpoint / TOKENIZER_DIR / "tokenizer.json"
    tokenizer_file.write_text(json.dumps({"type": "bpe", "merges": []}))
    message = refused(checkpoint, builtin_host.registries)
    assert f"{checkpoint / TOKENIZER_DIR} cannot be loaded by tokenizer 'byte'" in message
    assert "not a plugformer byte tokenizer" in message


def test_an_adapter_holding_only_pickle_weights_is_refused_unread(checkpoint, builtin_host, tmp_path):
    pytest.importorskip("peft")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2,
                                                             "target_modules": ["blocks.0.attn.qkv"]}))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {marker}",))

    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(Evil()))
    loaded = load_model_for_inference(checkpoint, builtin_host.registries, device="cpu")
    with pytest.raises(ConfigError) as info:
        attach_adapter(loaded.model, adapter, builtin_host.registries)
    message = str(info.value)
    assert "holds only pickle weights (adapter_model.bin)" in message and str(adapter) in message
    assert "\n" not in message and not marker.exists()


def _sharded_checkpoint(tmp_path: Path, metadata: bytes) -> Path:
    """A checkpoint directory whose weights are only a dcp/ index with the given bytes."""
    path = Path(shutil.copytree(FIXTURE, tmp_path / "sharded"))
    (path / MODEL_FILE).unlink()
    (path / "dcp").mkdir()
    (path / "dcp" / ".metadata").write_bytes(metadata)
    return path


def test_a_malicious_dcp_index_is_one_line_and_never_runs(tmp_path, builtin_host):
    from plugformer.ops import consolidate

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"echo pwned > {marker}",))

    path = _sharded_checkpoint(tmp_path, pickle.dumps(Evil()))
    with pytest.raises(ConfigError) as info:
        consolidate(path, tmp_path / "out", registries=builtin_host.registries)
    message = str(info.value)
    assert message.startswith(f"{path / 'dcp' / '.metadata'}: ") and "not a checkpoint metadata class" in message
    assert "\n" not in message and len(message) < 300 and not marker.exists()
    assert not (tmp_path / "out").exists()


def test_a_truncated_dcp_index_is_one_line(tmp_path, builtin_host):
    from plugformer.ops import consolidate

    path = _sharded_checkpoint(tmp_path, b"")
    with pytest.raises(ConfigError, match=r"\.metadata is not a readable DCP index \(EOFError"):
        consolidate(path, tmp_path / "out", registries=builtin_host.registries)


def test_generate_on_a_corrupt_checkpoint_prints_one_line_and_exits_2(checkpoint, tmp_path):
    (checkpoint / MODEL_FILE).write_bytes(b"")
    env = {**os.environ, "PLUGFORMER_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "plugformer", "generate", f"checkpoint={checkpoint}", "prompt=hi",
                           "max_new_tokens=2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"plugformer: error: {checkpoint / MODEL_FILE} is not a readable safetensors file "
                     "(0 bytes: Error while deserializing header: header too small)"], proc.stderr[-2000:]
