"""Distillation: a student learns a frozen teacher checkpoint's softened distribution (KL at a
temperature, optionally mixed with cross-entropy); a teacher with another tokenizer is refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from plugformer.build import build
from plugformer.checkpoint import save_model
from plugformer.errors import ConfigError
from plugformer.interfaces import SupervisedBatch
from plugformer.model import build_model
from plugformer_text.byte_tokenizer import ByteTokenizer
from plugformer_training.distill import distillation_kl

TOK = ByteTokenizer(None)


def save_checkpoint(cfg, model, tokenizer, path: Path) -> Path:
    path.mkdir(parents=True)
    save_model(path, model.state_dict())
    (path / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (path / "tokenizer").mkdir()
    tokenizer.save(path / "tokenizer")
    return path


@pytest.fixture
def teacher(registries, tiny_config, tmp_path):
    cfg = tiny_config("tokenizer=byte", "model.n_layers=2").copy()
    cfg.model.init_std = 0.2  # a confident random teacher: a clear target
    torch.manual_seed(1)
    model = build_model(cfg, registries, TOK.vocab_size)
    return cfg, model, save_checkpoint(cfg, model, TOK, tmp_path / "teacher")


def test_the_kl_term_is_zero_for_identical_logits_and_scaled_by_temperature_squared():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mask = torch.ones(2, 5)
    assert distillation_kl(t, t, mask, 2.0).abs() < 1e-6
    kl1 = distillation_kl(s, t, mask, 1.0)
    expected = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True,
                                          reduction="none").sum(-1).mean()
    assert torch.allclose(kl1, expected, atol=1e-6)
    mask[:, 3:] = 0  # masked positions do not count
    assert torch.allclose(distillation_kl(s, t, mask, 1.0), distillation_kl(s[:, :3], t[:, :3], mask[:, :3], 1.0))


def test_a_student_trained_on_the_teacher_gets_closer_to_it(registries, tiny_config, teacher):
    _, _, path = teacher
    objective = build(registries, "objective", {"name": "distill", "teacher": str(path), "temperature": 2.0}, TOK)
    torch.manual_seed(2)
    student = build_model(tiny_config("tokenizer=byte", "model.n_layers=1"), registries, TOK.vocab_size)
    opt = torch.optim.AdamW(student.parameters(), lr=3e-3)
    tokens = torch.randint(0, 256, (8, 17))
    kls = []
    for _ in range(30):
        out = objective(student, SupervisedBatch.unmasked(tokens))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        kls.append(out.metrics["kl"].item())
        assert set(out.metrics) == {"kl", "ce"}
    assert kls[-1] < 0.5 * kls[0]
    assert all(not p.requires_grad for p in objective.teacher.parameters())


def test_alpha_zero_is_the_plain_cross_entropy(registries, tiny_config, teacher):
    _, _, path = teacher
    objective = build(registries, "objective", {"name": "distill", "teacher": str(path), "alpha": 0.0}, TOK)
    sft = build(registries, "objective", {"name": "sft"}, TOK)
    student = build_model(tiny_config("tokenizer=byte"), registries, TOK.vocab_size)
    tokens = torch.randint(0, 256, (2, 9))
    assert torch.allclose(objective(student, tokens).loss, sft(student, tokens).loss)


def test_a_teacher_with_another_tokenizer_is_a_one_line_error(registries, tiny_config, tmp_path):
    cfg = tiny_config("tokenizer=byte").copy()
    old = ByteTokenizer(None, version=1)  # 257 ids: another id mapping
    model = build_model(cfg, registries, old.vocab_size)
    path = save_checkpoint(cfg, model, old, tmp_path / "other")
    with pytest.raises(ConfigError) as info:
        build(registries, "objective", {"name": "distill", "teacher": str(path)}, TOK)
    assert "uses a different tokenizer" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("options, message", [
    ({}, "objective.teacher is required"),
    ({"teacher": "/nonexistent/dir"}, "is not a plugformer checkpoint directory"),
    ({"teacher": "x", "temperature": 0.0}, "objective.temperature must be positive"),
    ({"teacher": "x", "alpha": 1.5}, "objective.alpha must be in [0, 1]"),
])
def test_bad_distillation_options_are_one_line_errors(registries, options, message):
    with pytest.raises(ConfigError) as info:
        build(registries, "objective", {"name": "distill", **options}, TOK)
    assert message in str(info.value)
