"""A user trains a tokenizer alone from the command line, then reuses its file through ``tokenizer=hf``."""
from __future__ import annotations

from pathlib import Path

import pytest

from plugformer.cli.main import COMMANDS

pytestmark = pytest.mark.skipif("tokenizer" not in COMMANDS,
                                reason="'plugformer tokenizer' is not wired into plugformer.cli.main yet")


def test_tokenizer_train_writes_a_file_that_hf_loads(cli, tmp_path: Path):
    out = tmp_path / "tok"
    proc = cli("tokenizer", "train", "tokenizer=bpe", "tokenizer.vocab_size=300", "data.max_bytes=100000",
               f"out={out}")
    summary, check = proc.stdout.strip().splitlines()[-2:]
    assert summary.startswith("tokenizer bpe: vocab_size 300 (eos 0, pad 1, mask 2); wrote ")
    assert "tokenizer.json" in summary and check.endswith("exact")
    assert (out / "tokenizer.json").is_file()

    from plugformer_text.bpe_tokenizer import BPETokenizer
    from plugformer_text.hf_file_tokenizer import HFFileTokenizer
    from plugformer_text.schemas import BPETokenizerConfig, HFFileTokenizerConfig

    bpe = BPETokenizer.load(BPETokenizerConfig(vocab_size=300), out)
    hf = HFFileTokenizer(HFFileTokenizerConfig(path=str(out)))
    text = "def f(x):\n\treturn x  # naïve café 数学 🚀\n"
    assert hf.encode(text) == bpe.encode(text) and hf.decode(hf.encode(text)) == text


def test_tokenizer_errors_are_one_line(cli):
    proc = cli("tokenizer", "trian", check=False)
    assert proc.returncode == 2
    assert "unknown tokenizer sub-command 'trian' (did you mean 'train'?)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = cli("tokenizer", "train", "tokenizer=bpe", check=False)
    assert proc.returncode == 2 and "out=DIR" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
