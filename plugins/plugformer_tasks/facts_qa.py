"""``facts_qa``: a seeded knowledge base of fictional facts (products, people, places with invented names and
attributes drawn from lists and ranges), one short passage per entity, and questions about them with short exact
answers. A model cannot know these facts; it can only read them from the passages in its prompt, so the task
measures whether retrieval-augmented generation works (benchmarks/rag_answers.py).

The knowledge base is split by ENTITY: an entity is held out when a stable hash of its name falls below
``val_fraction`` (the same partition whatever the seed), so no held-out fact is ever in a train record. Records are
``{"prompt": rag_prompt(question, passages), "response": " answer"}`` with the gold passage among ``distractors``
other passages, shuffled; :func:`write_knowledge_base` writes the whole knowledge base as documents (one per entity)
and the held-out questions as JSONL, for ``plugformer index build``, ``plugformer rag`` and ``plugformer eval
retrieval``.

    python -m plugformer_tasks.facts_qa kb_out/ --entities 1000 --seed 0      # kb_out/kb/*.md + held_out.jsonl
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from plugformer import ConfigError
from plugformer.interfaces import SPLITS, TextSource

#: bumped whenever the generated facts, passages or questions change (part of the fingerprint)
GENERATOR_VERSION = 1
#: document formats :func:`write_knowledge_base` writes
KB_FORMATS = ("md", "jsonl")
#: where the documents and the questions go inside the directory :func:`write_knowledge_base` writes
KB_DIR, HELD_OUT_QUESTIONS, TRAIN_QUESTIONS = "kb", "held_out.jsonl", "train.jsonl"

SYLLABLES = ("ka", "lo", "ve", "ra", "zu", "mi", "tor", "bel", "qui", "dan", "sor", "fen", "gal", "nor", "pim", "rux",
             "sel", "tam", "vor", "wen", "xi", "yul", "zan", "bro", "cre", "dru", "fla", "gri", "hes", "jor", "kel",
             "lum", "mas", "nep", "ost", "pra", "ril", "sta", "tri", "ump", "vel", "osh", "ard", "eno", "ith", "uba")
COLORS = ("red", "blue", "green", "yellow", "orange", "purple", "black", "white", "grey", "brown", "pink", "teal",
          "silver", "gold", "navy", "olive")
JOBS = ("baker", "pilot", "teacher", "nurse", "farmer", "painter", "chemist", "carpenter", "sailor", "librarian",
        "architect", "dentist", "tailor", "plumber", "judge", "miner", "poet", "surveyor", "weaver", "potter",
        "astronomer", "butcher", "clockmaker", "glassblower")


def invented_name(rng: random.Random) -> str:
    """A capitalised name of two or three syllables (``Kelvora``): no real word, no real entity."""
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3)))).capitalize()


Draw = Callable[[random.Random, "set[str]"], str]  # (rng, the entity names a value must not be) -> a value


def _number(low: int, high: int, unit: str = "") -> Draw:
    def draw(rng: random.Random, taken: set[str]) -> str:
        n = str(rng.randint(low, high))
        return f"{n} {unit}" if unit else n
    return draw


def _choice(values: Sequence[str]) -> Draw:
    return lambda rng, taken: rng.choice(values)


def _named(suffix: str = "") -> Draw:
    def draw(rng: random.Random, taken: set[str]) -> str:
        name = invented_name(rng)
        while name in taken:  # a value never reads like another entity's name
            name = invented_name(rng)
        return name + suffix
    return draw


#: per kind of entity: (attribute, how its value is drawn); a question names the attribute as the passage does
KINDS: dict[str, tuple[tuple[str, Draw], ...]] = {
    "product": (("maker", _named(" Works")), ("weight", _number(1, 400, "kg")), ("price", _number(5, 5000, "dollars")),
                ("color", _choice(COLORS)), ("release year", _number(1950, 2025))),
    "person": (("birthplace", _named()), ("job", _choice(JOBS)), ("birth year", _number(1900, 2010)),
               ("employer", _named(" Works")), ("height", _number(150, 205, "cm"))),
    "place": (("population", _number(500, 900000)), ("river", _named()), ("region", _named()),
              ("elevation", _number(0, 3500, "m")), ("founding year", _number(800, 1990))),
}

#: attributes each kind has (an entity states ``facts`` of them)
FACTS_PER_KIND = 5
assert all(len(attributes) == FACTS_PER_KIND for attributes in KINDS.values())


@dataclass(frozen=True)
class Entity:
    """One fictional entity: its name (unique in the knowledge base), kind and attribute values in passage order."""

    name: str
    kind: str
    facts: tuple[tuple[str, str], ...]

    @property
    def doc_id(self) -> str:
        """The id of its document (the file stem written by :func:`write_knowledge_base`)."""
        return self.name.lower()

    @property
    def passage(self) -> str:
        """Its one short passage: ``Kelvora is a product. Kelvora's weight is 42 kg. ...``."""
        return " ".join([f"{self.name} is a {self.kind}."] + [f"{self.name}'s {a} is {v}." for a, v in self.facts])


@dataclass(frozen=True)
class Question:
    """A question about one entity's attribute, its exact answer and the id of the document that holds it."""

    question: str
    answer: str
    doc_id: str
    attribute: str


def question_text(name: str, attribute: str) -> str:
    """The question asking for ``attribute`` of ``name`` (it names the attribute exactly as the passage does)."""
    return f"What is {name}'s {attribute}?"


def held_out(name: str, val_fraction: float) -> bool:
    """Whether the entity ``name`` is held out (a stable hash of the name, independent of the seed)."""
    digest = hashlib.sha256(f"facts_qa|{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


class FactsBase:
    """The knowledge base of one seed: ``entities`` entities, their passages, and the questions of each split."""

    def __init__(self, seed: int = 0, entities: int = 1000, val_fraction: float = 0.2, facts: int = FACTS_PER_KIND):
        if isinstance(entities, bool) or not isinstance(entities, int) or entities < 2:
            raise ConfigError(f"data.entities must be an integer of at least 2, got {entities!r}")
        if not 0.0 < float(val_fraction) < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {val_fraction!r}")
        if isinstance(facts, bool) or not isinstance(facts, int) or not 1 <= facts <= FACTS_PER_KIND:
            raise ConfigError(f"data.facts must be an integer in 1..{FACTS_PER_KIND}, got {facts!r}")
        self.seed, self.val_fraction = int(seed), float(val_fraction)
        rng = random.Random(f"facts_qa|{GENERATOR_VERSION}|{self.seed}")
        names: list[str] = []
        seen: set[str] = set()
        kinds = sorted(KINDS)
        attempts = 0
        while len(names) < entities:
            attempts += 1
            if attempts > 50 * entities:
                raise ConfigError(f"data.entities={entities} is more distinct names than the generator makes; "
                                  "lower it")
            name = invented_name(rng)
            if name not in seen:
                seen.add(name)
                names.append(name)
        self.entities: list[Entity] = []
        for i, name in enumerate(names):
            kind = kinds[i % len(kinds)]
            drawn = [(attribute, draw(rng, seen)) for attribute, draw in KINDS[kind]]
            rng.shuffle(drawn)
            self.entities.append(Entity(name, kind, tuple(drawn[:facts])))
        self.split_entities = {
            "train": [e for e in self.entities if not held_out(e.name, self.val_fraction)],
            "val": [e for e in self.entities if held_out(e.name, self.val_fraction)]}
        for split, members in self.split_entities.items():
            if not members:
                raise ConfigError(f"data.entities={entities} with data.val_fraction={val_fraction} leaves the "
                                  f"{split} split without entities; raise data.entities")

    def questions(self, split: str) -> list[Question]:
        """Every question about the entities of ``split`` (one per attribute), in entity order."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'; splits: {', '.join(SPLITS)}")
        return [Question(question_text(e.name, a), v, e.doc_id, a)
                for e in self.split_entities[split] for a, v in e.facts]

    def by_id(self) -> dict[str, Entity]:
        """Entities by document id."""
        return {e.doc_id: e for e in self.entities}


class FactsQATask(TextSource):
    """Records ``{"prompt": rag_prompt(question, passages), "response": " answer"}`` over one split's entities:
    the gold passage and ``distractors`` passages of other entities of the split (three in four of the same
    kind, as a retriever would rank them), shuffled. Documents are prompt + response as plain text."""

    has_records = True

    def __init__(self, config: Any):
        super().__init__(config)
        if isinstance(config.distractors, bool) or int(config.distractors) < 0:
            raise ConfigError(f"data.distractors must be an integer >= 0, got {config.distractors!r}")
        for key in ("questions_per_document", "questions_per_record"):
            value = getattr(config, key)
            if isinstance(value, bool) or int(value) < 1:
                raise ConfigError(f"data.{key} must be an integer >= 1, got {value!r}")
        self.base = FactsBase(int(config.seed), int(config.entities), float(config.val_fraction), int(config.facts))
        from plugformer.retrieval import DEFAULT_TEMPLATE, check_template

        self.template = check_template(config.template if config.template else DEFAULT_TEMPLATE)
        for split, members in self.base.split_entities.items():
            if len(members) <= int(config.distractors):
                raise ConfigError(f"data.distractors={config.distractors} needs more than that many entities in the "
                                  f"{split} split (it has {len(members)}); raise data.entities")
        self._cache: dict[str, list[tuple[dict[str, str], list[Entity]]]] = {}

    def records(self, split: str) -> Iterator[dict[str, Any]]:
        """``{"prompt", "response"}`` records; with ``questions_per_record`` > 1, each train record is a chat
        (``{"messages"}``) that goes on asking that many questions about the same passages (the follow-up
        turns: the template's part after ``{passages}``), so fine-tuning learns several answers per prompt.
        Held-out records always ask one question: the format ``plugformer rag`` answers."""
        per_record = int(self.config.questions_per_record) if split == "train" else 1
        rng = random.Random(f"facts_qa|{GENERATOR_VERSION}|{self.base.seed}|{split}|records")
        for record, shown in self._drawn(split):
            follow_ups = self._follow_ups(shown, per_record - 1, rng)
            if not follow_ups:
                yield record
                continue
            # every answer ends its line (the last one then the end of text): the model learns to stop after each
            answers = [record["response"]] + [answer for _, answer in follow_ups]
            questions = [record["prompt"]] + [question for question, _ in follow_ups]
            messages = []
            for question, answer in zip(questions, answers):
                messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer + "\n"}]
            yield {"messages": messages}

    def _follow_ups(self, shown: list[Entity], n: int, rng: random.Random) -> list[tuple[str, str]]:
        """``n`` more (question, " answer") pairs about facts of the ``shown`` passages, each question written with
        the template's part after ``{passages}`` (none when the template puts the question before the passages);
        a new line goes between an answer and the next question."""
        head, _, tail = self.template.partition("{passages}")
        if n <= 0 or "{question}" in head:
            return []
        facts = [(e.name, a, v) for e in shown for a, v in e.facts]
        return [(tail.format(question=question_text(name, attribute)).lstrip("\n"), " " + value)
                for name, attribute, value in rng.sample(facts, min(n, len(facts)))]

    def _drawn(self, split: str) -> list[tuple[dict[str, str], list[Entity]]]:
        """The records of ``split`` with the entities whose passages each prompt holds (drawn once)."""
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'; splits: {', '.join(SPLITS)}")
        if split not in self._cache:
            self._cache[split] = self._draw(split)
        return self._cache[split]

    def _draw(self, split: str) -> list[tuple[dict[str, str], list[Entity]]]:
        from plugformer.retrieval import rag_prompt

        members = self.base.split_entities[split]
        by_id = {e.doc_id: e for e in members}
        same_kind = {kind: [e for e in members if e.kind == kind] for kind in KINDS}
        rng = random.Random(f"facts_qa|{GENERATOR_VERSION}|{self.base.seed}|{split}|records")
        out = []
        for q in self.base.questions(split):
            shown = [by_id[q.doc_id]]
            while len(shown) < int(self.config.distractors) + 1:
                same = same_kind[shown[0].kind]
                other = rng.choice(same if rng.random() < 0.75 and len(same) > len(shown) else members)
                if other not in shown:
                    shown.append(other)
            rng.shuffle(shown)
            prompt = rag_prompt(q.question, [e.passage for e in shown], self.template)
            out.append(({"prompt": prompt, "response": " " + q.answer}, shown))
        rng.shuffle(out)
        return out

    def documents(self, split: str) -> Iterator[str]:
        """Each record's prompt and answer as plain text, followed by ``questions_per_document - 1`` more
        questions about facts of its passages and their answers, so a causal LM trained on the documents
        practises reading the answer from the right passage several times per prompt."""
        rng = random.Random(f"facts_qa|{GENERATOR_VERSION}|{self.base.seed}|{split}|documents")
        extra = int(self.config.questions_per_document) - 1
        for record, shown in self._drawn(split):
            follow_ups = self._follow_ups(shown, extra, rng)
            yield record["prompt"] + record["response"] + "".join("\n" + q + a for q, a in follow_ups)

    def fingerprint(self) -> str:
        params = {k: (v.value if hasattr(v, "value") else v) for k, v in vars(self.config).items()}
        params["generator"] = GENERATOR_VERSION
        return "task:facts_qa:" + hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KnowledgeBaseFiles:
    """What :func:`write_knowledge_base` wrote: the documents directory and the question files."""

    documents: Path
    held_out_questions: Path
    train_questions: Path


def _question_line(q: Question) -> str:
    return json.dumps({"question": q.question, "answer": q.answer, "id": q.doc_id}, ensure_ascii=False) + "\n"


def write_knowledge_base(directory: str | Path, base: FactsBase, fmt: str = "md") -> KnowledgeBaseFiles:
    """Write ``base`` under ``directory``: ``kb/`` (every entity's passage: one ``<id>.md`` file each, or, with
    ``fmt="jsonl"``, ``kb/facts.jsonl`` with one ``{"id", "text"}`` line each), ``held_out.jsonl`` and
    ``train.jsonl`` (``{"question", "answer", "id"}`` lines, ``id``: the gold document's id). Written into a
    temporary directory and moved into place, so a failure leaves nothing half-written; refuses to overwrite."""
    if fmt not in KB_FORMATS:
        raise ConfigError(f"knowledge-base format {fmt!r} is not one of {', '.join(KB_FORMATS)}")
    directory = Path(directory)
    targets = [directory / KB_DIR, directory / HELD_OUT_QUESTIONS, directory / TRAIN_QUESTIONS]
    taken = [str(t) for t in targets if t.exists()]
    if taken:
        raise ConfigError(f"{', '.join(taken)} already exist(s); write the knowledge base to a fresh directory")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".facts_qa-", dir=directory))
    try:
        kb = tmp / KB_DIR
        kb.mkdir()
        if fmt == "md":
            for e in base.entities:
                (kb / f"{e.doc_id}.md").write_text(e.passage + "\n", encoding="utf-8")
        else:
            lines = [json.dumps({"id": e.doc_id, "text": e.passage}, ensure_ascii=False) + "\n" for e in base.entities]
            (kb / "facts.jsonl").write_text("".join(lines), encoding="utf-8")
        for name, split in ((HELD_OUT_QUESTIONS, "val"), (TRAIN_QUESTIONS, "train")):
            (tmp / name).write_text("".join(_question_line(q) for q in base.questions(split)), encoding="utf-8")
        for target in targets:
            os.replace(tmp / target.name, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return KnowledgeBaseFiles(*targets)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m plugformer_tasks.facts_qa OUT``: write a knowledge base (see :func:`write_knowledge_base`)."""
    ap = argparse.ArgumentParser(description="Write the facts_qa knowledge base and its question files.")
    ap.add_argument("out", type=Path, help="directory to write kb/, held_out.jsonl and train.jsonl into")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--entities", type=int, default=1000)
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--facts", type=int, default=FACTS_PER_KIND, help="facts per entity")
    ap.add_argument("--format", choices=KB_FORMATS, default="md")
    args = ap.parse_args(argv)
    try:
        base = FactsBase(args.seed, args.entities, args.val_fraction, args.facts)
        files = write_knowledge_base(args.out, base, args.format)
    except ConfigError as exc:
        raise SystemExit(f"facts_qa: error: {exc}") from None
    print(f"documents: {files.documents}\nheld-out questions: {files.held_out_questions}\n"
          f"train questions: {files.train_questions}")


if __name__ == "__main__":
    main()
