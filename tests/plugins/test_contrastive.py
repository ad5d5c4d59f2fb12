"""Contrastive training of an embedder: query/positive records become PairBatches, InfoNCE pulls each query's
pooled vector towards its own positive and away from the batch's others, and ``stdlib_pairs`` holds out whole
modules so a held-out function is never trained on."""
from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import torch
from plugformer.build import build
from plugformer.errors import ConfigError
from plugformer.interfaces import PairBatch, TextSource
from plugformer.model import build_model
from plugformer.retrieval import pooled_embeddings
from plugformer.training.pairs import PairData, pad_texts
from plugformer_text.byte_tokenizer import ByteTokenizer
from plugformer_text.schemas import StdlibPairsConfig
from plugformer_text.stdlib_pairs import StdlibPairs, function_pairs, held_out_pairs, top_module
from plugformer_training.contrastive import info_nce, same_rows

TOK = ByteTokenizer(None)
#: a slice of the standard library: a few top-level modules, parsed in a second
SMALL = {"max_bytes": 600_000}


class Records(TextSource):
    """Records held in memory (a test's own pairs)."""

    has_records = True

    def __init__(self, train: list[dict[str, Any]], val: list[dict[str, Any]] | None = None):
        super().__init__(None)
        self.splits = {"train": train, "val": val if val is not None else train[:4]}

    def records(self, split):
        yield from self.splits[split]

    def documents(self, split):
        for r in self.splits[split]:
            yield r["query"] + "\n" + r["positive"]

    def fingerprint(self) -> str:
        return "records"


def toy_pairs(n: int, seed: int = 0) -> list[dict[str, str]]:
    """A made-up word and a sentence about it: a pair shares nothing but the word, so a model has to learn to match
    them (the sentence wording is the same for every pair)."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5)) for _ in range(n)]
    return [{"query": w, "positive": f"the thing called {w} is here"} for w in words]


def embed(model, texts: list[str], pooling: str = "mean") -> torch.Tensor:
    tokens, mask = pad_texts(TOK.encode_batch(texts), 64, TOK.pad_id)
    with torch.no_grad():
        return pooled_embeddings(model, tokens, mask, pooling)


def objective(registries, **options):
    return build(registries, "objective", {"name": "contrastive", **options}, TOK)


# -- the objective ------------------------------------------------------------------------------------------------
def test_training_pulls_each_query_to_its_own_positive(registries, tiny_config):
    pairs = toy_pairs(32)
    data = PairData(Records(pairs), TOK, seq_len=32, batch_size=16, eval_batches=1, seed=0)
    torch.manual_seed(0)
    model = build_model(tiny_config("tokenizer=byte", "objective=contrastive"), registries, TOK.vocab_size)
    loss_fn = objective(registries, temperature=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def gap() -> float:
        """Mean cosine of a query with its positive minus with another pair's positive."""
        q, p = embed(model, [r["query"] for r in pairs]), embed(model, [r["positive"] for r in pairs])
        sims = q @ p.T
        return float(sims.diag().mean() - sims[~torch.eye(len(pairs), dtype=torch.bool)].mean())

    before = gap()
    first = loss_fn(model, data.train_batch(1, 16)).loss.item()
    for step in range(1, 21):
        out = loss_fn(model, data.train_batch(step, 16))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        end = loss_fn(model, data.train_batch(1, 16))
    assert end.loss.item() < 0.5 * first, (first, end.loss.item())
    assert end.metrics["in_batch_accuracy"] > 0.8, end.metrics
    after = gap()
    assert after > before + 0.2 and after > 0.2, (before, after)


def test_the_loss_is_cross_entropy_over_the_batch_and_duplicates_are_not_negatives():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    p = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.3, 1.0]]), dim=1)
    logits = q @ p.T / 0.5
    expected = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    assert info_nce(q, p, 0.5).item() == pytest.approx(expected.item())
    ignore = torch.tensor([[False, True], [True, False]])  # each is the other's duplicate: nothing to contrast
    assert info_nce(q, p, 0.5, ignore).item() == pytest.approx(0.0, abs=1e-6)
    # which rows hold the same text: equal tokens where the mask is True, whatever the padding holds
    tokens = torch.tensor([[5, 6, 0], [5, 6, 7], [5, 6, 9], [8, 0, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert same_rows(tokens, mask).tolist() == [[True, False, True, False], [False, True, False, False],
                                                [True, False, True, False], [False, False, False, True]]


def test_hard_negatives_and_the_symmetric_loss(registries, tiny_config):
    pairs = [{**r, "negative": f"the thing called {r['query'][::-1]} is gone"} for r in toy_pairs(8)]
    data = PairData(Records(pairs), TOK, seq_len=32, batch_size=8, eval_batches=1, seed=0)
    batch = data.train_batch(1, 8)
    assert batch.negative is not None and batch.negative.shape[0] == 8
    torch.manual_seed(0)
    model = build_model(tiny_config("tokenizer=byte", "objective=contrastive"), registries, TOK.vocab_size)
    one_way = objective(registries)(model, batch)
    both = objective(registries, symmetric=True)(model, batch)
    for out in (one_way, both):
        assert torch.isfinite(out.loss) and out.loss.requires_grad
    # 8 queries against 16 candidates: at random init the loss is near log(16), above the 8-candidate log(8)
    no_negatives = objective(registries)(model, PairBatch(*[t for t in (batch.query, batch.query_mask,
                                                                        batch.positive, batch.positive_mask)]))
    assert one_way.loss.item() > no_negatives.loss.item()
    assert both.loss.item() != pytest.approx(one_way.loss.item())
    assert 0 <= one_way.metrics["in_batch_accuracy"] <= 1 and not one_way.metrics["in_batch_accuracy"].requires_grad


def test_last_token_pooling_trains_too(registries, tiny_config):
    data = PairData(Records(toy_pairs(8)), TOK, seq_len=32, batch_size=8, eval_batches=1, seed=0)
    torch.manual_seed(0)
    model = build_model(tiny_config("tokenizer=byte", "objective=contrastive"), registries, TOK.vocab_size)
    loss_fn = objective(registries, pooling="last", temperature=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = loss_fn(model, data.train_batch(1, 8))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_the_objective_needs_pairs_and_sane_options(registries, tiny_config):
    model = build_model(tiny_config("tokenizer=byte", "objective=contrastive"), registries, TOK.vocab_size)
    with pytest.raises(ConfigError, match="needs query/positive pairs: data=stdlib_pairs"):
        objective(registries)(model, torch.randint(0, 256, (2, 8)))
    with pytest.raises(ConfigError, match="temperature"):
        objective(registries, temperature=0)
    with pytest.raises(ConfigError, match="pooling"):
        objective(registries, pooling="max")


# -- pair batches ----------------------------------------------------------------------------------------------------
def test_pair_batches_are_padded_rows_cut_to_seq_len_and_depend_only_on_the_step():
    pairs = [{"query": "a" * n, "positive": "b" * (2 * n)} for n in range(1, 21)]
    data = PairData(Records(pairs), TOK, seq_len=16, batch_size=4, eval_batches=2, seed=3)
    batch = data.train_batch(2, 4)
    assert batch.query.shape[0] == 4 and batch.positive.shape[1] <= 16
    lengths = batch.query_mask.sum(1)
    for row, n in enumerate(lengths.tolist()):
        assert batch.query_mask[row, :n].all() and not batch.query_mask[row, n:].any()  # right padding
        assert (batch.query[row, n:] == TOK.pad_id).all()
    again = PairData(Records(pairs), TOK, seq_len=16, batch_size=4, eval_batches=2, seed=3).train_batch(2, 4)
    assert torch.equal(batch.query, again.query) and torch.equal(batch.positive_mask, again.positive_mask)
    assert not torch.equal(batch.query, data.train_batch(3, 4).query)
    halves = batch.chunk(2)
    assert [len(h) for h in halves] == [2, 2] and torch.equal(torch.cat([h.query for h in halves]), batch.query)
    assert len(list(data.val_batches(4))) == 1  # the val split here holds 4 records: one batch


def test_bad_pair_data_is_one_line(registries):
    with pytest.raises(ConfigError, match="yields plain documents, not records"):
        PairData(build(registries, "data", {"name": "stdlib", "max_bytes": 10_000}), TOK, seq_len=16,
                 batch_size=2, eval_batches=1, seed=0)
    with pytest.raises(ConfigError, match="train record 1: 'query' must be a non-empty string"):
        PairData(Records([{"query": "x", "positive": "y"}, {"query": " ", "positive": "y"}]), TOK, seq_len=16,
                 batch_size=2, eval_batches=1, seed=0)
    with pytest.raises(ConfigError, match="mixes records with and without 'negative'"):
        PairData(Records([{"query": "x", "positive": "y", "negative": "z"}, {"query": "x2", "positive": "y2"}]), TOK,
                 seq_len=16, batch_size=2, eval_batches=1, seed=0)
    with pytest.raises(ConfigError, match=r"has keys \['prompt', 'response'\]; objective=contrastive needs"):
        PairData(Records([{"prompt": "x", "response": "y"}]), TOK, seq_len=16, batch_size=2, eval_batches=1, seed=0)


def test_jsonl_files_of_pairs_train_contrastively(registries, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_pairs(40)))
    source = build(registries, "data", {"name": "jsonl", "path": str(path), "val_fraction": 0.2})
    train, val = list(source.records("train")), list(source.records("val"))
    assert train and val and not {r["query"] for r in train} & {r["query"] for r in val}
    assert next(source.documents("train")).startswith(train[0]["query"] + "\n")
    data = PairData(source, TOK, seq_len=32, batch_size=4, eval_batches=1, seed=0)
    assert isinstance(data.train_batch(1, 4), PairBatch)


def test_pairs_are_not_generative_fine_tuning_records(registries):
    from plugformer.training.supervised import ChatTemplate, SupervisedData

    with pytest.raises(ConfigError, match="is a query/positive pair: pairs train an embedder"):
        SupervisedData(Records(toy_pairs(4)), TOK, ChatTemplate(), seq_len=16, batch_size=2, eval_batches=1, seed=0)


# -- stdlib_pairs --------------------------------------------------------------------------------------------------
def test_a_pair_is_a_docstring_and_its_function_without_it():
    source = '''
class Greeter:
    def greet(self, name):
        """Return a friendly greeting for name, with an exclamation mark."""
        text = "hello " + name
        return text + "!"

    def todo(self):
        """Not written yet, but documented at some length anyway."""
        raise NotImplementedError

def short():
    """Too short."""
    return 1
'''
    (pair,) = function_pairs("pkg/greet.py", source, min_docstring_chars=40, min_code_lines=2)
    assert pair.id == "pkg/greet.py:Greeter.greet" and pair.module == "pkg" == top_module("pkg/greet.py")
    assert pair.query == "Return a friendly greeting for name, with an exclamation mark."
    assert pair.positive == 'def greet(self, name):\n    text = "hello " + name\n    return text + "!"'


def test_the_split_holds_out_whole_modules():
    source = build_pairs(**SMALL)
    train, val = source.pairs("train"), source.pairs("val")
    assert len(train) > 100 and len(val) > 10
    val_modules = {p.module for p in val}
    assert val_modules == source.val_modules
    assert not {p.module for p in train} & val_modules  # no function of a held-out module is trained on
    assert not {p.query for p in train} & {p.query for p in val}
    assert not {p.positive for p in train} & {p.positive for p in val}
    assert all('"""' not in p.positive.split("\n", 2)[1] for p in val if p.positive.count("\n") >= 1)
    share = len(val) / (len(train) + len(val))
    assert 0.03 < share < 0.4, share
    # seeded and deterministic: the same seed picks the same modules, another seed others
    assert build_pairs(**SMALL).val_modules == val_modules
    assert any(build_pairs(**SMALL, seed=s).val_modules != val_modules for s in (1, 2, 3))


def test_stdlib_pairs_records_feed_pair_batches_and_can_carry_hard_negatives():
    source = build_pairs(**SMALL, hard_negatives=True)
    records = list(source.records("train"))
    assert {"query", "positive", "negative", "id"} <= records[0].keys()
    by_code = {p.positive: p.module for p in source.pairs("train")}
    assert all(r["negative"] != r["positive"] for r in records)
    same_module = sum(by_code.get(r["negative"]) == by_code[r["positive"]] for r in records)
    assert same_module > 0.8 * len(records)
    data = PairData(source, TOK, seq_len=64, batch_size=8, eval_batches=1, seed=0)
    assert data.train_batch(1, 8).negative is not None


def test_held_out_pairs_are_the_val_split_aligned():
    config = StdlibPairsConfig(**SMALL)
    queries, positives = held_out_pairs(config)
    val = StdlibPairs(config).pairs("val")
    assert queries == [p.query for p in val] and positives == [p.positive for p in val]


def test_bad_stdlib_pairs_options_are_one_line(registries):
    with pytest.raises(ConfigError, match="val_fraction"):
        build(registries, "data", {"name": "stdlib_pairs", "val_fraction": 0})
    with pytest.raises(ConfigError, match="at least 2"):
        build(registries, "data", {"name": "stdlib_pairs", "max_bytes": 10}).pairs("train")


def build_pairs(**options) -> StdlibPairs:
    return StdlibPairs(StdlibPairsConfig(**options))


def test_log_of_batch_size_is_the_untrained_loss_scale():
    """A sanity anchor for the numbers above: identical embeddings give exactly log(B)."""
    same = torch.nn.functional.normalize(torch.ones(6, 4), dim=1)
    assert info_nce(same, same, 0.05).item() == pytest.approx(math.log(6), rel=1e-5)


# -- a learned temperature ---------------------------------------------------------------------------------------------
def contrastive_trainer(builtin_host, tiny_config, tmp_path, *overrides: str, strategy_node=None):
    """A Trainer of objective=contrastive on toy pairs in a .jsonl file (run directory ``tmp_path/run``); the
    parallel strategy is the config's unless ``strategy_node`` is given."""
    from plugformer.training import Trainer

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "pairs.jsonl"
    if not path.exists():
        path.write_text("".join(json.dumps(r) + "\n" for r in toy_pairs(48)))
    cfg = tiny_config("tokenizer=byte", "objective=contrastive", "data=jsonl", f"data.path={path}",
                      "data.val_fraction=0.25", "data.seq_len=32", "trainer.batch_size=8", "optimizer.lr=3e-2",
                      "scheduler=constant", "trainer.log_every=1", "trainer.eval_batches=1",
                      "trainer.callbacks=[metrics]", *overrides)
    strategy = build(builtin_host.registries, "parallel", strategy_node or cfg.parallel)
    return Trainer(cfg, tmp_path / "run", builtin_host, strategy, strategy.setup("cpu"))


def test_a_learned_temperature_trains_with_the_model(builtin_host, tiny_config, tmp_path):
    trainer = contrastive_trainer(builtin_host, tiny_config, tmp_path, "objective.learn_temperature=true",
                                  "objective.temperature=0.5", "trainer.max_steps=12")
    scale = trainer.objective_module.logit_scale
    assert scale.item() == pytest.approx(math.log(2.0))
    (group,) = [g for g in trainer.optimizer.param_groups if any(p is scale for p in g["params"])]
    assert group["weight_decay"] == 0.0 and len(group["params"]) == 1  # its own group, never decayed
    summary = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "loss" in r]
    assert logged[0]["temperature"] == pytest.approx(0.5)  # step 1 ran at the starting value
    assert summary["loss"] < logged[0]["loss"]
    assert math.exp(-scale.item()) != pytest.approx(0.5, abs=0.02)  # the temperature moved ...
    assert len({round(r["temperature"], 6) for r in logged}) > 5  # ... step by step, as logged
    assert 0.01 <= summary["temperature"] <= 10 and summary["val_temperature"] == pytest.approx(math.exp(-scale.item()))
    # the model checkpoint stays an ordinary Transformer checkpoint: the scale lives in the training state
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"), "pt") as f:
        assert not any("logit_scale" in key for key in f.keys())  # noqa: SIM118


def test_resume_continues_the_learned_temperature_exactly(builtin_host, tiny_config, tmp_path):
    learned = ("objective.learn_temperature=true", "objective.temperature=0.5", "trainer.save_every=3")
    whole = contrastive_trainer(builtin_host, tiny_config, tmp_path / "a", *learned, "trainer.max_steps=6")
    whole.fit()
    stopped = contrastive_trainer(builtin_host, tiny_config, tmp_path / "b", *learned, "trainer.max_steps=3")
    stopped.fit()
    at_stop = stopped.objective_module.logit_scale.item()
    resumed = contrastive_trainer(builtin_host, tiny_config, tmp_path / "b", *learned, "trainer.max_steps=6",
                                  "resume=true")
    assert resumed.step == 3 and resumed.objective_module.logit_scale.item() == at_stop
    assert resumed.optimizer.state_dict()["state"], "the optimizer's moments of the scale come back too"
    resumed.fit()
    assert resumed.objective_module.logit_scale.item() == pytest.approx(whole.objective_module.logit_scale.item(),
                                                                          abs=1e-6)
    # a run saved without a learned temperature is not resumed with one
    plain = contrastive_trainer(builtin_host, tiny_config, tmp_path / "c", "trainer.max_steps=2")
    plain.fit()
    with pytest.raises(ConfigError, match="objective.learn_temperature differs"):
        contrastive_trainer(builtin_host, tiny_config, tmp_path / "c", *learned, "trainer.max_steps=4", "resume=true")


def test_a_fixed_temperature_has_no_parameters_and_logs_none(builtin_host, tiny_config, tmp_path):
    trainer = contrastive_trainer(builtin_host, tiny_config, tmp_path, "trainer.max_steps=2")
    assert trainer.objective_module is None and trainer.objective.trainable_module() is None
    model_params = {id(p) for p in trainer.model.parameters()}
    assert all(id(p) in model_params for g in trainer.optimizer.param_groups for p in g["params"])
    assert "temperature" not in trainer.fit()


def test_a_learned_temperature_is_refused_under_other_parallel_strategies(registries, builtin_host, tiny_config,
                                                                           tmp_path):
    with pytest.raises(ConfigError, match=r"objective.learn_temperature=true .* parallel=ddp .* "
                                          r"use parallel=single or objective.learn_temperature=false"):
        # the config asks for ddp; the strategy object stays a single process, so this test starts no process
        # group and leaves no torchrun variables behind for later tests
        contrastive_trainer(builtin_host, tiny_config, tmp_path, "objective.learn_temperature=true", "parallel=ddp",
                            "trainer.max_steps=2", strategy_node=tiny_config().parallel)
    with pytest.raises(ConfigError, match="below 0.01"):
        objective(registries, learn_temperature=True, temperature=0.005)
