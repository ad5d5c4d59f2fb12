"""The end-to-end fixtures (``cli``: the real CLI in a subprocess, ``runs``, ``cache_dir``) for the plugin
tests that drive the command line, such as plugformer_hf's ``import-hf``/``export-hf``/``eval tasks=``."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("plugformer_e2e_fixtures", Path(__file__).parents[1] / "e2e" /
                                               "conftest.py")
_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_e2e)

cache_dir, cli, runs = _e2e.cache_dir, _e2e.cli, _e2e.runs


def _train_spm(root: Path, corpus: list[str]) -> Path:
    """A tiny unigram sentencepiece model (byte fallback, ``<pad>`` at 3, a ``<mask>`` control symbol) trained on
    ``corpus`` in ``root``: what the tokenizer tests load. The caller skips when sentencepiece is missing."""
    import sentencepiece

    (root / "corpus.txt").write_text("".join(corpus), encoding="utf-8")
    sentencepiece.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "tiny"), vocab_size=400, model_type="unigram",
        byte_fallback=True, pad_id=3, control_symbols=["<mask>"], hard_vocab_limit=False,
        minloglevel=2, num_threads=1)
    return root / "tiny.model"


@pytest.fixture(scope="session")
def train_spm() -> Callable[[Path, list[str]], Path]:
    """:func:`_train_spm`, for the tokenizer tests' module-scoped ``spm_model`` fixtures."""
    return _train_spm
