"""Each model preset in conf/model/ trains from its one-line command."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("preset, expected", [
    ("gpt2_tiny", {"position": "learned", "norm": "layernorm", "mlp": "gelu", "objective": "clm"}),
    ("llama_tiny", {"position": "rope", "norm": "rmsnorm", "mlp": "swiglu", "objective": "clm"}),
    ("bert_tiny", {"position": "learned", "tokenizer": "wordpiece", "objective": "mlm"}),
])
def test_a_preset_trains_from_one_line(cli, tmp_path, runs, preset, expected):
    run = tmp_path / preset
    cli("train", f"model={preset}", "model.n_layers=1", "model.d_model=64", "data.seq_len=32",
        "data.max_bytes=200000", "tokenizer.vocab_size=400", "trainer.batch_size=4", "trainer.max_steps=4",
        "threads=1", f"hydra.run.dir={run}")
    saved = (run / "config.yaml").read_text()
    for group, name in expected.items():
        assert f"{group}:\n  name: {name}\n" in saved, (group, name)
    rows = runs.metrics(run)
    assert rows[-1]["step"] == 4 and any("val_loss" in r for r in rows)
    if expected["objective"] == "mlm":
        assert any("val_masked_accuracy" in r for r in rows)
