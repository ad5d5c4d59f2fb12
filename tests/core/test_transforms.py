"""The core transforms a config switches on: activation checkpointing and per-block torch.compile
change how a step is computed, never what it computes, and leave the state dict as it was."""
from __future__ import annotations

import re
import time

import pytest
import torch

from plugformer import ConfigError
from plugformer.build import build
from plugformer.interfaces import ModelTransform, Stage
from plugformer.model import apply_transforms, build_model
from plugformer.model.transforms import (ActivationCheckpointing, CompileBlocks, activation_checkpointing_problem,
                                         checkpointed_blocks, compile_problem, config_transforms)
from plugformer.training import Trainer

VOCAB = 64
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


@pytest.fixture
def make_model(builtin_host, tiny_config):
    def make(seed: int = 0, **model_keys) -> torch.nn.Module:
        cfg = tiny_config().copy()
        for key, value in model_keys.items():
            cfg.model[key] = value
        torch.manual_seed(seed)
        return build_model(cfg, builtin_host.registries, vocab_size=VOCAB)

    return make


def tokens(batch: int = 2, length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def grads_of(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    logits = model(x[:, :-1])
    torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), x[:, 1:].reshape(-1)).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_gives_the_same_gradients(make_model):
    plain = make_model()
    ckpt = apply_transforms(make_model(), [ActivationCheckpointing()])
    ckpt.load_state_dict(plain.state_dict())
    assert all(type(b).__name__ == "CheckpointedBlock" for b in ckpt.blocks)
    x = tokens()
    a, b = grads_of(plain, x), grads_of(ckpt, x)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name


def test_checkpointing_only_chosen_blocks_gives_the_same_gradients(make_model):
    plain = make_model(n_layers=3)
    ckpt = apply_transforms(make_model(n_layers=3), [ActivationCheckpointing([0, 2])])
    ckpt.load_state_dict(plain.state_dict())
    assert [type(b).__name__ for b in ckpt.blocks] == ["CheckpointedBlock", "Block", "CheckpointedBlock"]
    x = tokens()
    a, b = grads_of(plain, x), grads_of(ckpt, x)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name


@pytest.mark.parametrize(("setting", "chosen"), [
    (True, [0, 1, 2, 3]), (False, []), (None, []), (1, [0, 1, 2, 3]), (2, [0, 2]), (3, [0, 3]), (9, [0]),
    ([1], [1]), ([3, 0, -1], [0, 3]), ([], [])])
def test_activation_checkpointing_selects_blocks_by_switch_stride_or_index(setting, chosen):
    assert checkpointed_blocks(setting, 4) == chosen


@pytest.mark.parametrize(("setting", "message"), [
    (0, "trainer.activation_checkpointing=0: every N-th block needs N >= 1"),
    (-2, "trainer.activation_checkpointing=-2: every N-th block needs N >= 1"),
    ([1, 4], "trainer.activation_checkpointing: 4 is not a block index of this 4-block model (valid: -4 .. 3)"),
    ([True], "True is not a block index"),
    ("blocks", "trainer.activation_checkpointing='blocks' is not one of: true (every block), false, N"),
    (1.5, "trainer.activation_checkpointing=1.5 is not one of")])
def test_a_bad_activation_checkpointing_value_is_named_in_one_line(setting, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        checkpointed_blocks(setting, 4)


def test_the_config_chooses_blocks_and_the_cli_check_names_a_bad_one(tiny_config):
    every_other = config_transforms(tiny_config("model.n_layers=4", "trainer.activation_checkpointing=2"))
    assert [type(t) for t in every_other] == [ActivationCheckpointing] and every_other[0].blocks == [0, 2]
    listed = config_transforms(tiny_config("model.n_layers=4", "trainer.activation_checkpointing=[-1]"))
    assert listed[0].blocks == [3]
    assert config_transforms(tiny_config("trainer.activation_checkpointing=[]")) == []
    assert activation_checkpointing_problem(tiny_config("trainer.activation_checkpointing=[0]")) is None
    problem = activation_checkpointing_problem(tiny_config("model.n_layers=2", "trainer.activation_checkpointing=[5]"))
    assert problem == ("trainer.activation_checkpointing: 5 is not a block index of this 2-block model "
                       "(valid: -2 .. 1)")


def test_activation_checkpointing_replays_dropout_masks(make_model):
    ckpt = apply_transforms(make_model(dropout=0.3), [ActivationCheckpointing()]).train()
    plain = make_model(dropout=0.3).train()
    plain.load_state_dict(ckpt.state_dict())
    x = tokens()
    torch.manual_seed(5)
    a = grads_of(plain, x)
    torch.manual_seed(5)
    b = grads_of(ckpt, x)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6, rtol=0), name


def test_checkpointing_saves_fewer_activations(make_model):
    """The tensors autograd keeps for backward shrink to each block's input."""
    def saved_bytes(model: torch.nn.Module) -> int:
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(tokens(4, 16)).sum()
        return total

    plain, ckpt = make_model(n_layers=4), apply_transforms(make_model(n_layers=4), [ActivationCheckpointing()])
    assert saved_bytes(ckpt) < 0.5 * saved_bytes(plain)


def test_transforms_keep_state_dict_keys_and_eval_is_unchanged(make_model):
    plain = make_model()
    model = apply_transforms(make_model(), [ActivationCheckpointing(), CompileBlocks("eager")])
    assert list(model.state_dict()) == list(plain.state_dict())
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in plain.named_parameters()]
    model.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert torch.allclose(model.eval()(tokens()), plain.eval()(tokens()), atol=1e-6)


def test_the_pipeline_orders_checkpointing_before_compile_before_the_wrapper(make_model):
    order: list[str] = []

    class Wrap(ModelTransform):
        stage = Stage.WRAP

        def apply(self, model):
            order.append(type(model.blocks[0]).__name__)
            return model

    model = apply_transforms(make_model(), [Wrap(), CompileBlocks("eager"), ActivationCheckpointing()])
    assert order == ["CompiledCheckpointedBlock"]
    assert isinstance(model.blocks[0], torch.nn.Module)


def test_config_switches_select_the_transforms(tiny_config):
    assert config_transforms(tiny_config()) == []
    chosen = config_transforms(tiny_config("trainer.activation_checkpointing=true", "compile=true",
                                           "compile_backend=aot_eager"))
    assert [type(t) for t in chosen] == [ActivationCheckpointing, CompileBlocks]
    assert chosen[1].backend == "aot_eager"


def test_an_unknown_compile_backend_is_one_clear_error(make_model):
    assert "compile_backend 'nope' is not a torch.compile backend" in compile_problem("nope")
    with pytest.raises(ConfigError, match="choose from: .*inductor"):
        apply_transforms(make_model(), [CompileBlocks("nope")])


def _trainer(builtin_host, tiny_config, tmp_path, *overrides: str) -> Trainer:
    cfg = tiny_config("tokenizer=byte", "data.max_bytes=200000", f"data.cache_dir={tmp_path / 'cache'}",
                      "model.dropout=0.0", "trainer.batch_size=4", "scheduler=constant", *overrides)
    strategy = build(builtin_host.registries, "parallel", cfg.parallel)
    return Trainer(cfg, tmp_path / "run", builtin_host, strategy, strategy.setup("cpu"))


def _two_steps(trainer: Trainer) -> list[float]:
    losses = []
    for step in (1, 2):
        trainer.step = step
        losses.append(trainer.train_step().item())
    return losses


def test_trainer_with_activation_checkpointing_matches_the_plain_run(builtin_host, tiny_config, tmp_path):
    plain = _trainer(builtin_host, tiny_config, tmp_path)
    ckpt = _trainer(builtin_host, tiny_config, tmp_path, "trainer.activation_checkpointing=true")
    ckpt.model.load_state_dict(plain.model.state_dict())
    a, b = _two_steps(plain), _two_steps(ckpt)
    assert all(abs(x - y) < 1e-6 for x, y in zip(a, b)), (a, b)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_training_matches_eager_loss(builtin_host, tiny_config, tmp_path, backend):
    if backend == "inductor" and compile_problem("inductor") is not None:
        pytest.skip(compile_problem("inductor"))
    torch._dynamo.reset()
    eager = _trainer(builtin_host, tiny_config, tmp_path)
    compiled = _trainer(builtin_host, tiny_config, tmp_path, "compile=true", f"compile_backend={backend}")
    compiled.model.load_state_dict(eager.model.state_dict())
    assert type(compiled.model.blocks[0]).__name__ == "CompiledBlock"
    start = time.perf_counter()
    a, b = _two_steps(eager), _two_steps(compiled)
    assert all(abs(x - y) < 1e-4 for x, y in zip(a, b)), (a, b)
    assert time.perf_counter() - start < 120


def test_checkpointed_blocks_compile_and_give_the_same_gradients(make_model):
    torch._dynamo.reset()
    plain = make_model()
    both = apply_transforms(make_model(), [ActivationCheckpointing(), CompileBlocks("aot_eager")])
    both.load_state_dict(plain.state_dict())
    x = tokens()
    a, b = grads_of(plain, x), grads_of(both, x)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5, rtol=0), name
