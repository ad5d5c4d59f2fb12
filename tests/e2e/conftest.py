"""Fixtures for end-to-end tests: the real CLI in a subprocess, with a shared token cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# a tiny model on a small slice of the stdlib corpus: seconds per run on 2 CPU cores
TINY = ["model.n_layers=2", "model.d_model=64", "model.n_heads=2", "data.seq_len=64", "trainer.batch_size=4",
        "data.max_bytes=300000", "tokenizer.vocab_size=512", "scheduler=constant", "optimizer.lr=3e-3",
        "seed=0", "threads=1", "trainer.log_every=1", "trainer.eval_batches=2"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("plugformer-cache")


@pytest.fixture
def cli(cache_dir: Path, tmp_path: Path):
    """Run ``plugformer ARGS`` (as ``python -m plugformer``) in ``tmp_path``; return the CompletedProcess."""

    def run(*args: str, check: bool = True, env: dict[str, str] | None = None,
            launcher: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PLUGFORMER_CACHE": str(cache_dir), "PYTHONUNBUFFERED": "1", **(env or {})}
        cmd = [*(launcher or [sys.executable, "-m"]), "plugformer", *args]
        proc = subprocess.run(cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return proc

    return run


class Runs:
    """Reads what a run directory holds."""

    tiny = TINY

    @staticmethod
    def metrics(run_dir: Path) -> list[dict]:
        return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]

    @classmethod
    def losses(cls, run_dir: Path) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in cls.metrics(run_dir) if "loss" in r}


@pytest.fixture
def runs() -> type[Runs]:
    return Runs
