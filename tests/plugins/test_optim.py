"""Tests for the built-in optimizers (with ``no_decay`` grouping) and LR schedulers of plugformer_training."""
from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from plugformer.checkpoint import flatten_state, unflatten_state
from plugformer.interfaces import param_groups, param_kinds
from plugformer_training import availability, optimizers, schedulers
from plugformer_training.schemas import (AdafactorConfig, AdamConfig, AdamWConfig, ConstantConfig, CosineConfig,
                                         LinearConfig, ParamKind, SGDConfig, WSDConfig)


class Toy(nn.Module):
    """Every parameter kind: embedding (tied to the head), a norm with bias, a linear with bias, an RMSNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 4)
        self.rms = nn.RMSNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.rms(self.proj(self.norm(self.emb(tokens)))))


def group_names(model: nn.Module, groups: list[dict]) -> list[tuple[set[str], float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [({names[id(p)] for p in g["params"]}, g["weight_decay"]) for g in groups]


# ---- no_decay grouping ---------------------------------------------------------------------------

def test_default_no_decay_exempts_norms_biases_embeddings():
    model = Toy()
    groups = param_groups(model, 0.1, ["norm", "bias", "embedding"])
    assert group_names(model, groups) == [
        ({"proj.weight"}, 0.1),
        ({"emb.weight", "norm.weight", "norm.bias", "proj.bias", "rms.weight"}, 0.0)]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))  # tied head counted once


@pytest.mark.parametrize("no_decay, exempt", [
    ([], set()),
    (["bias"], {"norm.bias", "proj.bias"}),
    (["norm"], {"norm.weight", "norm.bias", "rms.weight"}),
    ([ParamKind.embedding], {"emb.weight"}),
])
def test_no_decay_kinds_select_exactly_their_parameters(no_decay, exempt):
    model = Toy()
    everything = {n for n, _ in model.named_parameters()}
    expected = [(everything - exempt, 0.1), (exempt, 0.0)]
    assert group_names(model, param_groups(model, 0.1, no_decay)) == [g for g in expected if g[0]]


def test_a_custom_norm_class_and_a_lone_1d_weight_count_as_norm():
    class MyNorm(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))

    model = nn.Sequential(MyNorm(), nn.Linear(4, 4, bias=False))
    model.register_parameter("gate_weight", nn.Parameter(torch.ones(4)))
    kinds = {n: k for n, _, k in param_kinds(model)}
    assert kinds == {"0.scale": {"norm"}, "1.weight": set(), "gate_weight": {"norm"}}


def test_frozen_parameters_are_left_out():
    model = Toy()
    model.proj.weight.requires_grad_(False)
    assert group_names(model, param_groups(model, 0.1, ["norm", "bias", "embedding"]))[0][0] != {"proj.weight"}


def test_unknown_no_decay_kind_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown kind\(s\) 'biases'; valid: norm, bias, embedding"):
        param_groups(Toy(), 0.1, ["biases"])


# ---- optimizers ----------------------------------------------------------------------------------

OPTIMIZERS = [
    ("adamw", AdamWConfig(lr=0.05)),
    ("adamw", AdamWConfig(lr=0.05, fused=False)),
    ("adam", AdamConfig(lr=0.05)),
    ("sgd", SGDConfig(lr=0.05, nesterov=True)),
    pytest.param("adafactor", AdafactorConfig(lr=0.05),
                 marks=pytest.mark.skipif(not availability.adafactor()[0], reason="torch lacks Adafactor")),
]


@pytest.mark.parametrize("name, config", OPTIMIZERS)
def test_optimizer_steps_decrease_a_quadratic(name, config):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    target = torch.randn(8, 4)
    x = torch.randn(8, 4)

    def loss() -> torch.Tensor:
        return (model(x) - target).pow(2).mean()

    optimizer = getattr(optimizers, name)(config, model)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [config.weight_decay, 0.0]
    start = loss().item()
    for _ in range(20):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.9 * start


def test_adam_and_adamw_are_fused_on_cpu_by_default():
    model = nn.Linear(4, 4)
    assert optimizers.adam(AdamConfig(), model).defaults["fused"]
    assert optimizers.adamw(AdamWConfig(), model).defaults["fused"]
    assert not optimizers.adamw(AdamWConfig(fused=False), model).defaults["fused"]


def test_nesterov_without_momentum_is_a_clear_error():
    with pytest.raises(ValueError, match="nesterov=true needs momentum > 0"):
        optimizers.sgd(SGDConfig(momentum=0.0, nesterov=True), nn.Linear(2, 2))


def test_adafactor_availability_agrees_with_torch():
    ok, reason = availability.adafactor()
    assert ok == hasattr(torch.optim, "Adafactor") and (ok or "2.5" in reason)


def test_adafactor_rejects_a_malformed_eps():
    with pytest.raises(ValueError, match=r"eps must be \[eps1, eps2\]"):
        optimizers.adafactor(AdafactorConfig(eps=[1e-3]), nn.Linear(2, 2))


# ---- schedulers ----------------------------------------------------------------------------------

def lrs(factory, config, max_steps: int = 100, base_lr: float = 1.0) -> list[float]:
    """The learning rate in effect at steps 0..max_steps."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = factory(config, optimizer, max_steps)
    out = []
    for _ in range(max_steps + 1):
        out.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return out


def test_warmup_is_linear_from_one_step_to_the_peak():
    for factory, config in [(schedulers.cosine, CosineConfig(warmup_steps=10)),
                            (schedulers.linear, LinearConfig(warmup_steps=10)),
                            (schedulers.constant, ConstantConfig(warmup_steps=10)),
                            (schedulers.wsd, WSDConfig(warmup_steps=10))]:
        curve = lrs(factory, config)
        assert curve[0] == pytest.approx(0.1) and curve[4] == pytest.approx(0.5), factory.__name__
        assert curve[9] == pytest.approx(1.0) and curve[10] == pytest.approx(1.0), factory.__name__


def test_cosine_curve():
    curve = lrs(schedulers.cosine, CosineConfig(warmup_steps=10, min_lr_ratio=0.1))
    assert curve[55] == pytest.approx(0.55)  # half-way: the mean of peak and floor
    assert curve[100] == pytest.approx(0.1)


def test_linear_curve():
    curve = lrs(schedulers.linear, LinearConfig(warmup_steps=10, min_lr_ratio=0.2))
    assert curve[55] == pytest.approx(0.6)
    assert curve[100] == pytest.approx(0.2)
    assert all(a >= b for a, b in itertools.pairwise(curve[10:]))


def test_constant_curve():
    assert set(lrs(schedulers.constant, ConstantConfig(warmup_steps=0))) == {1.0}


@pytest.mark.parametrize("shape, midpoint", [("linear", 0.55), ("cosine", 0.55)])
def test_wsd_warms_up_holds_then_decays_over_the_last_fraction(shape, midpoint):
    curve = lrs(schedulers.wsd, WSDConfig(warmup_steps=10, decay_fraction=0.2, min_lr_ratio=0.1,
                                          decay_shape=shape))
    assert curve[10:81] == [1.0] * 71  # stable until the decay starts at step 80
    assert curve[81] < 1.0
    assert curve[90] == pytest.approx(midpoint)
    assert curve[100] == pytest.approx(0.1)
    if shape == "cosine":
        assert curve[85] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_wsd_rejects_bad_shape_and_fraction():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="decay_shape must be one of linear, cosine"):
        schedulers.wsd(WSDConfig(decay_shape="step"), optimizer, 10)
    with pytest.raises(ValueError, match="decay_fraction"):
        schedulers.wsd(WSDConfig(decay_fraction=1.5), optimizer, 10)


@pytest.mark.parametrize("factory, config", [
    (schedulers.cosine, CosineConfig()), (schedulers.linear, LinearConfig()),
    (schedulers.constant, ConstantConfig(warmup_steps=3)), (schedulers.wsd, WSDConfig(decay_shape="cosine"))])
def test_scheduler_state_round_trips_through_a_checkpoint(factory, config):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = factory(config, optimizer, 50)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    skeleton, tensors = flatten_state(scheduler.state_dict())
    assert not tensors
    restored_state = unflatten_state(json.loads(json.dumps(skeleton)), tensors)

    fresh_optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    fresh = factory(config, fresh_optimizer, 50)
    fresh.load_state_dict(restored_state)
    for _ in range(5):
        for opt, sched in ((optimizer, scheduler), (fresh_optimizer, fresh)):
            opt.step()
            sched.step()
        assert fresh.get_last_lr() == scheduler.get_last_lr()


# ---- registration and config ---------------------------------------------------------------------

def test_registration_is_torch_free_and_resolves():
    code = ("import sys, plugformer, plugformer_training as p\n"
            "r = plugformer.Registries(); p.plugformer_register(registries=r)\n"
            "assert r.optimizer.get('adafactor').availability()[0] in (True, False)\n"
            "assert 'torch' not in sys.modules, 'registration or availability imported torch'\n")
    subprocess.run([sys.executable, "-c", code], check=True)

    import plugformer
    import plugformer_training

    registries = plugformer.Registries()
    plugformer_training.plugformer_register(registries=registries)
    assert set(registries.optimizer.names()) >= {"adamw", "adam", "sgd", "adafactor"}
    assert set(registries.scheduler.names()) >= {"cosine", "linear", "wsd", "constant"}
    for entry in [*registries.optimizer, *registries.scheduler]:
        assert callable(entry.load()) and entry.load_schema() is not None


@pytest.mark.parametrize("overrides, kind", [
    (("optimizer=adam", "optimizer.no_decay=[bias]", "scheduler=wsd", "scheduler.decay_shape=cosine"), "adam"),
    (("optimizer=adafactor", "scheduler=linear"), "adafactor"),
    (("optimizer=sgd", "optimizer.no_decay=[]", "scheduler=cosine"), "sgd"),
])
def test_composed_configs_build(tiny_config, builtin_host, overrides, kind):
    from plugformer.build import build
    from plugformer.model import build_model

    if kind == "adafactor" and not availability.adafactor()[0]:
        pytest.skip("torch lacks Adafactor")
    cfg = tiny_config(*overrides)
    registries = builtin_host.registries
    model = build_model(cfg, registries, 32)
    optimizer = build(registries, "optimizer", cfg.optimizer, model)
    scheduler = build(registries, "scheduler", cfg.scheduler, optimizer, 10)
    model(torch.randint(0, 32, (2, 8))).sum().backward()
    optimizer.step()
    scheduler.step()
    assert type(optimizer).__name__.lower() == kind
    flatten_state(scheduler.state_dict())  # plain data only


def test_composed_config_rejects_an_unknown_no_decay_kind(tiny_config):
    from plugformer.errors import PlugformerError

    with pytest.raises((PlugformerError, ValueError), match="no_decay"):
        tiny_config("optimizer.no_decay=[biases]")
