"""A user scripts checkpoint operations from Python (plugformer.ops): prune, quantize, merge and
consolidate return where they wrote and what they did, the results load like any checkpoint, and every
write is atomic: a taken ``out`` is refused before any work, a failure leaves nothing behind."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from plugformer.checkpoint import (
    CONFIG_FILE,
    MERGE_FILE,
    MODEL_FILE,
    PLUGINS_FILE,
    QUANTIZATION_FILE,
    TOKENIZER_DIR,
    is_quantized,
    load_config,
    load_model,
    load_model_for_inference,
    quantization_record,
    trained_adapter,
    write_model_checkpoint,
)
from plugformer.errors import ConfigError
from plugformer.ops import (
    ConsolidateReport,
    MergeReport,
    PruneReport,
    QuantizeReport,
    consolidate,
    merge,
    prune,
    quantize,
)

FIXTURE = Path(__file__).parents[1] / "data" / "checkpoint-v1"


def logits(checkpoint: Path, registries, adapter: Path | None = None) -> torch.Tensor:
    loaded = load_model_for_inference(checkpoint, registries, device="cpu", adapter=adapter)
    with torch.no_grad():
        return loaded.model(torch.tensor([loaded.tokenizer.encode("def main():")]))[0]


def test_prune_returns_its_report_and_writes_a_loadable_checkpoint(tmp_path, builtin_host):
    report = prune(FIXTURE, tmp_path / "pruned", 0.5, "layer", registries=builtin_host.registries)
    assert isinstance(report, PruneReport) and report.out == tmp_path / "pruned"
    assert report.scope == "layer" and abs(report.reached - 0.5) < 0.01 and report.params
    weights = load_model(report.out)
    assert all(abs((weights[name] == 0).float().mean().item() - 0.5) < 0.01 for name in report.params)
    assert load_config(report.out).pruning.params == report.params
    assert {p.name for p in report.out.iterdir()} == {MODEL_FILE, CONFIG_FILE, PLUGINS_FILE, TOKENIZER_DIR}
    assert logits(report.out, builtin_host.registries).isfinite().all()


def test_quantize_returns_its_report_and_the_result_loads_through_its_quantizer(tmp_path, builtin_host):
    report = quantize(FIXTURE, {"name": "bf16"}, tmp_path / "bf16", registries=builtin_host.registries)
    assert isinstance(report, QuantizeReport) and report.quantizer["name"] == "bf16"
    assert report.bytes == report.source_bytes // 2
    assert is_quantized(report.out) and quantization_record(report.out) == json.loads(
        (report.out / QUANTIZATION_FILE).read_text())
    loaded = load_model_for_inference(report.out, builtin_host.registries, device="cpu")
    assert loaded.model.tok_emb.weight.dtype == torch.bfloat16
    assert torch.allclose(logits(report.out, builtin_host.registries).float(),
                          logits(FIXTURE, builtin_host.registries), atol=0.05)
    with pytest.raises(ConfigError, match="is already quantized"):
        quantize(report.out, "fp16", tmp_path / "again", registries=builtin_host.registries)
    with pytest.raises(ConfigError, match="is quantized; prune the full-precision checkpoint"):
        prune(report.out, tmp_path / "pruned", 0.3, registries=builtin_host.registries)


def test_merge_folds_a_saved_adapter_into_the_base(tmp_path, builtin_host):
    pytest.importorskip("peft")
    from plugformer.build import build

    registries = builtin_host.registries
    model = load_model_for_inference(FIXTURE, registries, device="cpu").model
    lora = build(registries, "adapter", {"name": "lora", "r": 2, "target_modules": ["*.attn.qkv"]})
    adapted = lora.apply(model)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    lora.save_artifacts(tmp_path)
    adapter = tmp_path / "adapter"
    with pytest.raises(ConfigError, match="trained without an adapter; pass adapter=DIR"):
        merge(FIXTURE, tmp_path / "merged", registries=registries)
    report = merge(FIXTURE, tmp_path / "merged", adapter, registries=registries)
    assert isinstance(report, MergeReport) and report.adapter == "lora"
    assert trained_adapter(report.out) is None
    assert json.loads((report.out / MERGE_FILE).read_text())["adapter"] == "lora"
    unmerged = logits(FIXTURE, registries, adapter=adapter)
    assert not torch.allclose(unmerged, logits(FIXTURE, registries), atol=1e-4)  # the adapter does something
    assert torch.allclose(logits(report.out, registries), unmerged, atol=1e-5)


def test_consolidate_rebuilds_the_model_file_of_a_sharded_checkpoint(tmp_path, builtin_host):
    from plugformer_parallel.sharded import save_sharded

    registries = builtin_host.registries
    sharded = Path(shutil.copytree(FIXTURE, tmp_path / "sharded"))
    model = load_model_for_inference(FIXTURE, registries, device="cpu").model
    save_sharded(sharded, model, torch.optim.AdamW(model.parameters()))
    (sharded / MODEL_FILE).unlink()
    exported = consolidate(sharded, tmp_path / "export", registries=registries)
    assert isinstance(exported, ConsolidateReport) and exported.model_file == tmp_path / "export" / MODEL_FILE
    assert exported.params == sum(p.numel() for p in model.parameters())
    in_place = consolidate(sharded, registries=registries)
    assert in_place.out == sharded and not list(sharded.glob(".tmp-*"))
    expected = load_model(FIXTURE)
    for rebuilt in (load_model(exported.out), load_model(sharded)):
        assert rebuilt.keys() == expected.keys() and all(torch.equal(rebuilt[k], expected[k]) for k in expected)
    with pytest.raises(ConfigError, match="already the full model"):
        consolidate(FIXTURE, tmp_path / "x", registries=registries)


@pytest.mark.parametrize("operation", [
    lambda out, r: prune(FIXTURE, out, 0.3, registries=r),
    lambda out, r: quantize(FIXTURE, "bf16", out, registries=r),
    lambda out, r: merge(FIXTURE, out, FIXTURE / "adapter", registries=r),
], ids=["prune", "quantize", "merge"])
def test_a_taken_out_directory_is_refused_and_kept(tmp_path, builtin_host, operation):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match=f"out={out} already exists and is not empty"):
        operation(out, builtin_host.registries)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


class FailingTokenizer:
    def save(self, directory: Path) -> None:
        (Path(directory) / "half-written").write_text("x")
        raise OSError("disk full")


def test_the_writer_leaves_nothing_behind_when_it_fails(tmp_path):
    state = {"w": torch.ones(2, 2)}
    with pytest.raises(OSError, match="disk full"):
        write_model_checkpoint(tmp_path / "out", {"model": {}}, state, tokenizer=FailingTokenizer())
    assert list(tmp_path.iterdir()) == []


def test_the_writer_writes_weights_config_tokenizer_plugins_and_records(tmp_path):
    state = {"a": torch.arange(4.0), "b": torch.ones(3)}
    state["tied"] = state["a"]
    out = write_model_checkpoint(tmp_path / "new", {"model": {"d_model": 4}}, state, source=FIXTURE,
                                 records={"note.json": {"why": "test"}})
    assert out == tmp_path / "new" and not list(tmp_path.glob(".tmp-*"))
    assert load_model(out).keys() == state.keys() and load_config(out).model.d_model == 4
    tokenizer_file = Path(TOKENIZER_DIR) / "tokenizer.json"
    assert (out / tokenizer_file).read_text() == (FIXTURE / tokenizer_file).read_text()
    assert (out / PLUGINS_FILE).read_bytes() == (FIXTURE / PLUGINS_FILE).read_bytes()
    assert json.loads((out / "note.json").read_text()) == {"why": "test"}
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        write_model_checkpoint(out, {}, state, source=FIXTURE)
