"""A user measures retrieval-augmented answers on facts no model can know: ``data=facts_qa`` generates, from a
seed, fictional entities with one passage each and questions with exact answers, split by entity, as RAG prompts
for fine-tuning; the same knowledge base is written to disk for ``plugformer index build`` and ``plugformer rag``."""
from __future__ import annotations

import json
import re

import pytest
from plugformer.build import build
from plugformer.errors import ConfigError
from plugformer.retrieval import DEFAULT_TEMPLATE, rag_prompt
from plugformer.training.supervised import ChatTemplate, prompt_and_answer
from plugformer_tasks.facts_qa import FactsBase, main, write_knowledge_base

PASSAGE_LINE = re.compile(r"^\[(\d+)\] (.*)$")


def facts(registries, **options):
    return build(registries, "data", {"name": "facts_qa", "entities": 60, **options})


def records(source, split):
    return list(source.records(split))


def parse(prompt: str) -> tuple[list[str], str]:
    """The passages and the question a default-template prompt holds."""
    lines = prompt.split("\n")
    passages = [PASSAGE_LINE.match(line).group(2) for line in lines if PASSAGE_LINE.match(line)]
    question = next(line for line in lines if line.startswith("Question: "))[len("Question: "):]
    return passages, question


def test_the_same_seed_generates_the_same_facts_and_records_and_another_seed_others(registries):
    a, b, other = facts(registries, seed=3), facts(registries, seed=3), facts(registries, seed=4)
    for split in ("train", "val"):
        assert records(a, split) == records(b, split)
        assert records(a, split) != records(other, split)
    assert a.fingerprint() == b.fingerprint() != other.fingerprint()
    assert [e.passage for e in FactsBase(3, 60).entities] == [e.passage for e in a.base.entities]
    fewer = FactsBase(3, 60, facts=2)
    assert len(fewer.questions("train")) == 2 * len(fewer.split_entities["train"])
    assert all(e.passage.count(f"{e.name}'s ") == 2 for e in fewer.entities)


def test_held_out_entities_never_appear_in_train_records(registries):
    source = facts(registries, entities=200, seed=1)
    train = {e.name for e in source.base.split_entities["train"]}
    val = {e.name for e in source.base.split_entities["val"]}
    assert train and val and not train & val and len(train | val) == 200
    train_text = "\n".join(r["prompt"] + r["response"] for r in records(source, "train"))
    assert not any(f"{name}'s" in train_text for name in val)
    assert all(any(f"{name}'s" in r["prompt"] for name in val) for r in records(source, "val"))
    # the partition is by name, whatever the seed: a name held out under one seed is never trained under another
    other = FactsBase(seed=2, entities=200)
    assert not {e.name for e in other.split_entities["train"]} & val


def test_every_answer_is_in_its_gold_passage_and_only_one_passage_holds_the_asked_fact(registries):
    source = facts(registries, seed=0)
    by_id = source.base.by_id()
    for split in ("train", "val"):
        for q in source.base.questions(split):
            assert f"{q.attribute} is {q.answer}." in by_id[q.doc_id].passage
        for r in records(source, split):
            passages, question = parse(r["prompt"])
            name, attribute = re.match(r"What is (.+)'s (.+)\?$", question).groups()
            holding = [p for p in passages if f"{name}'s {attribute} is{r['response']}." in p]
            assert len(holding) == 1 and len(passages) == 3


def test_records_are_rag_prompts_with_the_gold_passage_among_distractors(registries):
    source = facts(registries, distractors=4, seed=0)
    passages_of = {e.passage for e in source.base.entities}
    rows = records(source, "train")
    positions = set()
    for r in rows:
        passages, question = parse(r["prompt"])
        assert len(passages) == 5 and len(set(passages)) == 5 and set(passages) <= passages_of
        assert r["prompt"] == rag_prompt(question, passages)
        assert r["response"].startswith(" ") and r["response"].strip() == r["response"][1:]
        name = re.match(r"What is (.+)'s", question).group(1)
        positions.add(next(i for i, p in enumerate(passages) if p.startswith(f"{name} is a ")))
    assert positions == set(range(5))  # the gold passage is shuffled among the distractors
    single = facts(registries, distractors=4, seed=0, questions_per_document=1)
    assert next(single.documents("train")) == rows[0]["prompt"] + rows[0]["response"]
    custom = facts(registries, seed=0, template="Context:\n{passages}Q: {question}\nA:")
    first = records(custom, "train")[0]
    assert first["prompt"].startswith("Context:\n[1] ") and "\nQ: What is " in first["prompt"]
    assert DEFAULT_TEMPLATE.startswith("Passages:")


def test_documents_ask_several_questions_about_their_passages_for_causal_lm_training(registries):
    source = facts(registries, seed=0, questions_per_document=5)
    for document, record in zip(source.documents("train"), records(source, "train")):
        assert document.startswith(record["prompt"] + record["response"] + "\nQuestion: What is ")
        assert document.split("\nQuestion: ")[2:] and "\n\n" not in document.split("Question: ", 1)[1]
        passages, _ = parse(record["prompt"])
        extra = re.findall(r"\nQuestion: What is (.+)'s (.+)\?\nAnswer: (.+)", document[len(record["prompt"]):])
        assert len(extra) == 4
        for name, attribute, answer in extra:
            assert sum(f"{name}'s {attribute} is {answer}." in p for p in passages) == 1


def test_train_records_may_be_chats_asking_several_questions_while_held_out_records_ask_one(registries):
    source = facts(registries, seed=0, questions_per_record=4)
    plain = facts(registries, seed=0)
    for chat, record in zip(records(source, "train"), records(plain, "train")):
        turns = chat["messages"]
        assert [t["role"] for t in turns] == ["user", "assistant"] * 4
        assert turns[0]["content"] == record["prompt"] and turns[1]["content"] == record["response"] + "\n"
        passages, _ = parse(record["prompt"])
        assert all(t["content"].endswith("\n") for t in turns[1::2])
        for ask, answer in zip(turns[2::2], turns[3::2]):
            name, attribute = re.match(r"^Question: What is (.+)'s (.+)\?\nAnswer:$", ask["content"]).groups()
            assert sum(f"{name}'s {attribute} is{answer['content'].rstrip()}." in p for p in passages) == 1
    assert records(source, "val") == records(plain, "val")
    # with the plain chat template a chat record is read as one text: the prompt, then question after question
    first = records(source, "train")[0]
    pieces, answer = prompt_and_answer(first, ChatTemplate())
    assert "".join(text for text, _ in pieces) + answer == "".join(t["content"] for t in first["messages"])


@pytest.mark.parametrize("options, named", [({"distractors": 100}, "data.distractors=100"),
                                            ({"entities": 1}, "data.entities"),
                                            ({"questions_per_document": 0}, "data.questions_per_document"),
                                            ({"facts": 6}, "data.facts"),
                                            ({"questions_per_record": 0}, "data.questions_per_record"),
                                            ({"template": "{question} only"}, "{passages}")])
def test_bad_options_are_one_clear_line(registries, options, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        records(facts(registries, **options), "train")


def test_the_knowledge_base_is_written_as_plain_documents_and_question_files(tmp_path):
    base = FactsBase(seed=0, entities=40)
    files = write_knowledge_base(tmp_path / "out", base)
    docs = sorted(files.documents.iterdir())
    assert len(docs) == 40 and all(d.suffix == ".md" for d in docs)
    text = {d.stem: d.read_text(encoding="utf-8") for d in docs}
    held_out = [json.loads(line) for line in files.held_out_questions.read_text(encoding="utf-8").splitlines()]
    val_ids = {e.doc_id for e in base.split_entities["val"]}
    assert held_out and {q["id"] for q in held_out} == val_ids
    for q in held_out:
        assert set(q) == {"question", "answer", "id"} and q["answer"] in text[q["id"]]
    train = [json.loads(line) for line in files.train_questions.read_text(encoding="utf-8").splitlines()]
    assert not {q["id"] for q in train} & val_ids
    with pytest.raises(ConfigError, match="fresh directory"):
        write_knowledge_base(tmp_path / "out", base)


def test_the_knowledge_base_as_one_jsonl_file_and_from_the_command_line(tmp_path, capsys):
    files = write_knowledge_base(tmp_path / "j", FactsBase(seed=0, entities=30), fmt="jsonl")
    lines = [json.loads(line) for line in (files.documents / "facts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 30 and all(set(d) == {"id", "text"} and d["text"].startswith(d["id"].capitalize())
                                    for d in lines)
    with pytest.raises(ConfigError, match="'pdf' is not one of md, jsonl"):
        write_knowledge_base(tmp_path / "p", FactsBase(seed=0, entities=30), fmt="pdf")
    main([str(tmp_path / "cli"), "--entities", "25", "--seed", "5"])
    assert len(list((tmp_path / "cli" / "kb").glob("*.md"))) == 25 and "held-out questions" in capsys.readouterr().out
