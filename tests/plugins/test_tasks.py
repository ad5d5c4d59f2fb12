"""A user picks a shipped task (or their own JSONL records) as fine-tuning data: seeded, with held-out
problems that never appear in training, and clear errors for bad options or records."""
from __future__ import annotations

import json

import pytest
from plugformer.build import build
from plugformer.errors import ConfigError


def task(registries, name="addition", **options):
    return build(registries, "data", {"name": name, **options})


def records(source, split):
    return list(source.records(split))


@pytest.mark.parametrize("name", ["addition", "reverse", "uppercase"])
def test_each_task_is_seeded_and_its_splits_never_share_a_problem(registries, name):
    a = task(registries, name, n_train=300, n_val=60, seed=1)
    b = task(registries, name, n_train=300, n_val=60, seed=1)
    assert records(a, "train") == records(b, "train") and records(a, "val") == records(b, "val")
    other = task(registries, name, n_train=300, n_val=60, seed=2)
    assert records(other, "train") != records(a, "train")
    train_prompts = {r["prompt"] for s in (a, other) for r in records(s, "train")}
    val_prompts = {r["prompt"] for s in (a, other) for r in records(s, "val")}
    assert len(train_prompts) > 300 and len(val_prompts) > 60
    assert not train_prompts & val_prompts
    assert len({r["prompt"] for r in records(a, "train")}) == 300  # distinct problems


def test_addition_answers_are_right_and_documents_hold_prompt_and_answer(registries):
    source = task(registries, n_train=50, n_val=10, digits=3)
    for r in records(source, "train"):
        a, b = r["prompt"].rstrip("=").split("+")
        assert int(r["response"]) == int(a) + int(b) and int(a) < 1000
    assert next(source.documents("val")) == records(source, "val")[0]["prompt"] + records(source, "val")[0]["response"]


def test_string_tasks_transform_their_input(registries):
    rev = records(task(registries, "reverse", n_train=20, n_val=5), "train")[0]
    assert rev["prompt"] == f"rev {rev['response'][::-1]}="
    up = records(task(registries, "uppercase", n_train=20, n_val=5), "train")[0]
    assert up["prompt"] == f"up {up['response'].lower()}="


def test_the_held_out_partition_does_not_depend_on_the_prompt_wording(registries):
    symbols = task(registries, n_train=500, n_val=100)
    words = task(registries, n_train=500, n_val=100, prompt="{a} plus {b} is ")
    def as_pairs(rs):
        return {tuple(int(x) for x in r["prompt"].replace(" plus ", "+").rstrip("= is").split("+"))
                for r in rs}

    assert not as_pairs(records(words, "train")) & as_pairs(records(symbols, "val"))


def test_preference_format_pairs_the_right_answer_with_a_near_miss(registries):
    for name in ("addition", "reverse"):
        for r in records(task(registries, name, n_train=100, n_val=10, format="preference"), "train"):
            assert set(r) == {"prompt", "chosen", "rejected"} and r["chosen"] != r["rejected"]


@pytest.mark.parametrize("options, message", [
    ({"digits": 0}, "data.digits must be in 1..9"),
    ({"n_train": 9000}, "data.n_train=9000 is too many"),
    ({"prompt": "{a}+="}, "must contain exactly {a}, {b}"),
    ({"val_fraction": 0.0}, "data.val_fraction must be in (0, 1)"),
    ({"n_val": 0}, "data.n_val must be at least 1"),
])
def test_bad_task_options_are_one_line_errors(registries, options, message):
    with pytest.raises(ConfigError, match=None) as info:
        records(task(registries, **options), "train")
    assert message in str(info.value) and "\n" not in str(info.value)


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_jsonl_records_hold_out_a_share_of_prompts_or_a_given_file(registries, tmp_path):
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(200)] + [{"prompt": "q0", "response": "again"}]
    path = write(tmp_path / "r.jsonl", rows)
    source = task(registries, "jsonl", path=str(path), val_fraction=0.2)
    train, val = records(source, "train"), records(source, "val")
    assert len(train) + len(val) == 201 and 20 < len(val) < 60
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}  # a repeated prompt stays on one side
    held = write(tmp_path / "v.jsonl", [{"messages": [{"role": "user", "content": "q1"},
                                                      {"role": "assistant", "content": "a1"}]}])
    source = task(registries, "jsonl", path=str(path), val_path=str(held))
    assert records(source, "val")[0]["messages"][0]["content"] == "q1" and len(records(source, "train")) == 201


@pytest.mark.parametrize("line, message", [
    ("{not json", "r.jsonl:2: not valid JSON"),
    ('{"text": "x"}', "r.jsonl:2 has keys ['text']; expected prompt+response"),
    ("[1, 2]", "r.jsonl:2: expected a JSON object"),
])
def test_bad_records_name_the_file_and_line(registries, tmp_path, line, message):
    path = write(tmp_path / "r.jsonl", [{"prompt": "a", "response": "b"}, line])
    with pytest.raises(ConfigError) as info:
        records(task(registries, "jsonl", path=str(path)), "train")
    assert message in str(info.value)


def test_a_missing_records_file_is_one_line(registries, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        task(registries, "jsonl", path=str(tmp_path / "nope.jsonl"))
