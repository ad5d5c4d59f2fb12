"""A tiny checkpoint built in a second, and a real ``plugformer serve`` process on a free loopback port."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch

CONTEXT = 512


def write_tiny_checkpoint(tiny_config: Any, registries: Any, out: Path, template: dict | None = None) -> Path:
    """A random 2-layer model over bytes (large init: clear-cut greedy picks), written as a checkpoint; with
    ``template``, its config records that chat template as ``plugformer finetune`` does."""
    from omegaconf import OmegaConf

    from plugformer.checkpoint import write_model_checkpoint
    from plugformer.model import build_model
    from plugformer_text.byte_tokenizer import ByteTokenizer

    cfg = tiny_config("tokenizer=byte").copy()
    cfg.model.max_seq_len = CONTEXT
    cfg.model.init_std = 0.3
    torch.manual_seed(0)
    tokenizer = ByteTokenizer(None)
    model = build_model(cfg, registries, tokenizer.vocab_size)
    config = OmegaConf.to_container(cfg, resolve=True)
    if template is not None:
        config["finetune"] = {"template": template}  # where plugformer finetune records it
    return write_model_checkpoint(out, OmegaConf.create(config), model.state_dict(), tokenizer=tokenizer)


class ServerProcess:
    """``plugformer serve`` in a subprocess: waits for its ready line, reads its address, stops it."""

    def __init__(self, checkpoint: Path, *args: str, log: Path, ready_timeout: float = 60.0):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.log = log
        self._log_file = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "plugformer", "serve", f"checkpoint={checkpoint}",
                                      "server.port=0", "device=cpu", *args], stdout=subprocess.PIPE,
                                     stderr=self._log_file, text=True, env=env)
        deadline = time.monotonic() + ready_timeout
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if " on http://" in line or self.proc.poll() is not None:
                break
        if " on http://" not in line:
            self.stop()
            raise AssertionError(f"the server did not start: {line!r}\n{log.read_text()[-3000:]}")
        self.url = line.split(" on ", 1)[1].split()[0]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def metric(self, name: str) -> float:
        """A metric's value from ``/metrics`` (the first sample named exactly ``name``)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for row in text.splitlines():
            if row.startswith(name + " ") or row.startswith(name + "{"):
                return float(row.rsplit(" ", 1)[1])
        raise AssertionError(f"{name} not in /metrics")

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log_file.close()
