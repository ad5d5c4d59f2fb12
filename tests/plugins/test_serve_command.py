"""``plugformer serve`` refuses every bad setting in one line before it loads the model, and another server
plugin registers and is chosen the same way (``server.name=``)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from plugformer.errors import PlugformerError
from plugformer_serve.command import parse, run
from plugformer_serve.schemas import OpenAIServerConfig


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    (tmp_path / "ckpt").mkdir()
    return tmp_path / "ckpt"


@pytest.mark.parametrize("args, words", [
    ([], ["needs", "checkpoint"]),
    (["checkpoint=/no/such/dir"], ["/no/such/dir", "does not exist"]),
    (["server.port=abc"], ["server.port", "'abc'", "whole number"]),
    (["server.prot=80"], ["server.prot", "did you mean", "server.port"]),
    (["server.max_batch=0"], ["server.max_batch", ">= 1"]),
    (["server.kv_cache_tokens=many"], ["server.kv_cache_tokens", "whole number"]),
    (["server.timeout_s=soon"], ["server.timeout_s", "number"]),
    (["precision=fp16"], ["precision", "fp32, bf16"]),
    (["server.adapters=sql"], ["server.adapters", "mapping"]),
    (["server.adapters={sql: /no/such/adapter}"], ["sql", "/no/such/adapter", "not a directory"]),
    (["server.api_key=[]"], ["server.api_key"]),
    (["draft=/no/draft"], ["draft", "does not exist"]),
])
def test_bad_arguments_are_one_line_errors_naming_the_key(ckpt, args, words):
    full = args if not args or args[0].startswith("checkpoint=") else [f"checkpoint={ckpt}", *args]
    with pytest.raises(PlugformerError) as err:
        parse(full)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize("args, words", [
    (["server.port=70000"], ["server.port=70000", "0..65535"]),
    (["server.timeout_s=0"], ["server.timeout_s", "> 0"]),
    (["server.model_name= "], ["server.model_name"]),
    (["server.name=grpc"], ["grpc", "openai"]),
])
def test_bad_server_settings_fail_before_the_model_loads(ckpt, args, words):
    with pytest.raises(PlugformerError) as err:
        run([f"checkpoint={ckpt}", *args])  # ckpt holds no model: reaching the load would fail differently
    assert all(w in str(err.value) for w in words), str(err.value)


def test_settings_become_the_server_node_and_engine_knobs(ckpt, tmp_path):
    (tmp_path / "a").mkdir()
    settings = parse([f"checkpoint={ckpt}", "server.port=9001", "server.api_key=[k1,k2]", "server.timeout_s=2.5",
                      "server.max_batch=8", "server.max_waiting=4", "server.kv_cache_tokens=4096",
                      f"server.adapters={{sql: {tmp_path / 'a'}}}", "precision=bf16"])
    assert settings["server"] == {"name": "openai", "port": 9001, "api_key": ["k1", "k2"], "timeout_s": 2.5}
    assert settings["engine"] == {"max_batch": 8, "max_waiting": 4, "kv_cache_tokens": 4096}
    assert settings["adapters"] == {"sql": tmp_path / "a"} and settings["precision"] == "bf16"
    config = OpenAIServerConfig(port=9001, api_key=["k1", "k2"])
    assert config.host == "127.0.0.1" and config.keys() == ["k1", "k2"]


def test_the_cli_prints_one_line_and_exits_2(ckpt):
    proc = subprocess.run([sys.executable, "-m", "plugformer", "serve", f"checkpoint={ckpt}", "server.port=abc"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["plugformer: error: plugformer serve: server.port='abc' is not a "
                                                "whole number"]


def test_another_server_registers_and_is_chosen_the_same_way(host, fake_plugin):
    """A third-party server (e.g. gRPC) is one registration away: ``plugformer serve server.name=NAME``."""
    from dataclasses import dataclass

    from plugformer import hookimpl
    from plugformer.interfaces import Server

    served = []

    @dataclass
    class EchoConfig:
        port: int = 50051

    class EchoServer(Server):
        def serve(self, engine, *, chat_template=None, adapters=(), ready=None):
            served.append((self.config.port, engine, chat_template, list(adapters)))
            ready(f"echo://:{self.config.port}")

    @hookimpl
    def plugformer_register(registries):
        registries.server.register("echo", EchoServer, schema=EchoConfig)

    from plugformer.plugins import LoadSettings

    host.load_entry_points([fake_plugin("echo_server", plugformer_register=plugformer_register)], LoadSettings())
    from plugformer.build import build

    server = build(host.registries, "server", {"name": "echo", "port": 7})
    server.serve("an engine", ready=lambda address: served.append(address))
    assert served == [(7, "an engine", None, []), "echo://:7"]
