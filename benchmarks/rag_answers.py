#!/usr/bin/env python
"""Answers with retrieval vs closed-book on fictional facts (``facts_qa``): does retrieval make a small model's
answers right?

1. The ``facts_qa`` knowledge base (seeded fictional products, people and places; one passage each) is written
   to disk with ``plugformer_tasks.facts_qa.write_knowledge_base``; its entities are split into train and
   held-out ones.
2. A small model (BPE of 1024 fitted on the task, 4 layers, d_model 128: 0.92M parameters) learns the
   "passages + question -> answer" format on TRAIN entities only, with the real CLI: ``plugformer train
   data=facts_qa`` (450 causal-LM steps on the task's documents: each a RAG prompt followed by eight questions
   about its passages and their answers; this is where the model learns to look answers up), then ``plugformer
   finetune data=facts_qa template=plain data.questions_per_record=9`` (1000 SFT steps, loss on the answers only;
   each train record is the RAG prompt followed by nine questions about its passages). Each prompt holds the
   gold passage among distractors of the same split, shuffled, exactly as ``plugformer.retrieval.rag_prompt``
   writes it.
3. On the HELD-OUT entities' questions (facts the model never saw), greedy answers from
   ``plugformer.engine.Engine``, exact match against the answer:
   (a) with retrieval: top-k passages for the question from the product's index of the WHOLE knowledge base,
       built as a user builds one (``plugformer index build data.path=kb/ embedder=none retriever=bm25``) and
       searched in one batch through ``plugformer.retrieval.Index``;
   (b) closed-book: the same model, the same prompt format with no passages;
   plus retrieval recall@k of the gold passage, the oracle score (the held-out records: gold passage + random
   distractors) and chance (the most frequent train answer of each attribute).

Measured (the full run below, seed 0, 1000 held-out questions, ``--threads 1`` on a shared 2-core CPU machine,
2026-12-04, 21 minutes wall: stage 1 527 s, stage 2 652 s, scoring 40 s): exact match 92.5% with retrieval
(recall@3 100%), 94.7% with oracle passages, 0.5% closed-book, 0.7% chance. With ``--seed 1``: 82.8% with
retrieval, 86.4% oracle, 0.3% closed-book, 1.3% chance (17 minutes).

    python benchmarks/rag_answers.py                 # the full run (~21 minutes on one CPU thread)
    python benchmarks/rag_answers.py --quick         # a smoke run: fewer entities and steps (far below target)
    python benchmarks/rag_answers.py --checkpoint runs/qa   # score a model trained as this script trains one
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

MODEL = ["tokenizer=bpe", "tokenizer.vocab_size=1024", "position=rope", "model.n_layers=4", "model.d_model=128",
         "model.n_heads=4", "model.dropout=0.0"]
#: stage 1 reads documents about entities with all five facts each (more to read per passage); stage 2 and the
#: score use three facts per entity (products: weight, price, maker...; people: birthplace, job...; places:
#: population, river...). The same seed draws the same names first, whatever the count, and the held-out
#: partition is by name, so no stage ever sees a held-out entity.
PRETRAIN_FACTS, FACTS = 5, 3
FULL = {"pretrain_entities": 2000, "entities": 3000, "pretrain_steps": 450, "finetune_steps": 1000}
QUICK = {"pretrain_entities": 300, "entities": 300, "pretrain_steps": 20, "finetune_steps": 20}


def plugformer(command: str, *args: str, work: Path, threads: int | None) -> None:
    """Run one ``plugformer`` CLI command in a subprocess, its caches under ``work`` (``threads``: the torch
    threads of a command that runs a model; None for one that does not take ``threads=``)."""
    env = {**os.environ, "PLUGFORMER_CACHE": str(work / "cache")}
    extra = [f"threads={threads}"] if threads is not None else []
    proc = subprocess.run([sys.executable, "-m", "plugformer", command, *args, *extra], cwd=work,
                          env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"plugformer {command} failed:\n{proc.stderr[-3000:]}")


def build_index(kb: Path, out: Path, work: Path) -> None:
    """Index the knowledge base ``kb`` as a user would, with the product's lexical index: ``plugformer index build
    data.path=kb/ embedder=none retriever=bm25 out=...`` (one chunk per passage: every passage is shorter than
    the default chunk of 200 words)."""
    plugformer("index", "build", f"data.path={kb}", "embedder=none", "retriever=bm25", f"out={out}", work=work,
               threads=None)


def answers(engine, prompts: list[str], max_tokens: int) -> list[str]:
    """Greedy completions of ``prompts``: their first line, stripped (an answer is one line)."""
    from plugformer.engine import SamplingParams

    outs = engine.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0.0, stop=["\n"]))
    return [o.outputs[0].text.strip() for o in outs]


def exact_match(predicted: list[str], gold: list[str]) -> float:
    return sum(p == g for p, g in zip(predicted, gold)) / max(1, len(gold))


def train(work: Path, sizes: dict, seed: int, k: int, threads: int) -> Path:
    """The two CLI stages on TRAIN entities; returns the fine-tuned run directory."""
    common = ["data=facts_qa", f"data.seed={seed}", f"data.distractors={k - 1}"]
    plugformer("train", *MODEL, *common, f"data.entities={sizes['pretrain_entities']}",
               f"data.facts={PRETRAIN_FACTS}", "data.seq_len=512", f"trainer.max_steps={sizes['pretrain_steps']}",
               "trainer.batch_size=8", "optimizer.lr=3e-3", "scheduler.warmup_steps=30", "trainer.eval_every=0",
               "trainer.save_every=0", "trainer.callbacks=[metrics]", f"seed={seed}",
               f"hydra.run.dir={work / 'pretrain'}", work=work, threads=threads)
    plugformer("finetune", f"checkpoint={work / 'pretrain'}", *common, f"data.entities={sizes['entities']}",
               f"data.facts={FACTS}", f"data.questions_per_record={FACTS * k}", "data.seq_len=320", "template=plain",
               f"trainer.max_steps={sizes['finetune_steps']}", "trainer.batch_size=8", "optimizer.lr=2e-3",
               "scheduler.warmup_steps=20", "trainer.eval_every=0", "trainer.save_every=0",
               "trainer.callbacks=[metrics]", "eval_examples=50", "max_new_tokens=12", f"seed={seed}",
               f"hydra.run.dir={work / 'qa'}", work=work, threads=threads)
    return work / "qa"


def score(checkpoint: Path, work: Path, entities: int, seed: int, k: int, threads: int, questions_cap: int) -> dict:
    """Held-out exact match of ``checkpoint`` with retrieval from the product's BM25 index of the whole knowledge
    base (:func:`build_index`, searched in one batch), with oracle passages, closed-book, and chance; retrieval
    recall@k of the gold passage."""
    import torch

    from plugformer import load_plugins
    from plugformer.build import build
    from plugformer.engine import Engine
    from plugformer.retrieval import Index, rag_prompt
    from plugformer_tasks.facts_qa import FactsBase, write_knowledge_base

    torch.set_num_threads(threads)
    base = FactsBase(seed=seed, entities=entities, facts=FACTS)
    files = write_knowledge_base(work / "facts", base)
    held_out = [json.loads(line) for line in files.held_out_questions.read_text().splitlines()][:questions_cap]
    questions, gold = [q["question"] for q in held_out], [q["answer"] for q in held_out]
    build_index(files.documents, work / "index", work)
    host = load_plugins()
    hits = Index.open(work / "index", host.registries).search(questions, k)
    retrieved = [[hit.chunk.text for hit in row] for row in hits]
    sources = [{Path(str(hit.chunk.metadata["source"])).stem for hit in row} for row in hits]
    recall = sum(q["id"] in found for q, found in zip(held_out, sources)) / len(held_out)
    engine = Engine.from_checkpoint(checkpoint, device="cpu")
    with_retrieval = answers(engine, [rag_prompt(q, passages) for q, passages in zip(questions, retrieved)], 12)
    closed_book = answers(engine, [rag_prompt(q, []) for q in questions], 12)
    source = build(host.registries, "data", {"name": "facts_qa", "entities": entities, "facts": FACTS, "seed": seed,
                                             "distractors": k - 1})
    oracle_records = list(source.records("val"))[:questions_cap]
    oracle = exact_match(answers(engine, [r["prompt"] for r in oracle_records], 12),
                         [r["response"].strip() for r in oracle_records])
    majority: dict[str, Counter] = {}
    for q in base.questions("train"):
        majority.setdefault(q.attribute, Counter())[q.answer] += 1
    attribute = {q.question: q.attribute for q in base.questions("val")}
    chance = exact_match([majority[attribute[q]].most_common(1)[0][0] for q in questions], gold)
    examples = [{"question": q, "answer": g, "with_retrieval": a, "closed_book": c}
                for q, g, a, c in list(zip(questions, gold, with_retrieval, closed_book))[:5]]
    return {"entities": entities, "train_entities": len(base.split_entities["train"]),
            "held_out_entities": len(base.split_entities["val"]), "held_out_questions": len(held_out), "k": k,
            "recall_at_k": recall, "em_with_retrieval": exact_match(with_retrieval, gold),
            "em_closed_book": exact_match(closed_book, gold), "em_chance": chance, "em_oracle_passages": oracle,
            "params": sum(p.numel() for p in engine.model.parameters()), "examples": examples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few entities and steps (far below target)")
    ap.add_argument("--entities", type=int, default=None, help="entities of the knowledge base scored (and SFT)")
    ap.add_argument("--pretrain-entities", type=int, default=None)
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--finetune-steps", type=int, default=None)
    ap.add_argument("--k", type=int, default=3, help="passages retrieved per question (and in each train prompt)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--questions", type=int, default=1000, help="held-out questions scored at most")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here too")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    ap.add_argument("--checkpoint", type=Path, default=None,
                    help="score this fine-tuned checkpoint (trained as this script trains one) instead of training")
    args = ap.parse_args()
    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key, None) is not None:
            sizes[key] = getattr(args, key)
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = train(work, sizes, args.seed, args.k, args.threads)
        trained = time.perf_counter() - t0
        r = score(checkpoint, work, sizes["entities"], args.seed, args.k, args.threads, args.questions)
        r.update(train_wall_s=trained, wall_s=time.perf_counter() - t0, checkpoint=str(checkpoint),
                 **({} if args.checkpoint else {"pretrain_steps": sizes["pretrain_steps"],
                                                 "finetune_steps": sizes["finetune_steps"]}))
    how = (f"checkpoint {checkpoint}" if args.checkpoint else
           f"{r['pretrain_steps']} CLM + {r['finetune_steps']} SFT steps ({r['train_wall_s']:.0f}s)")
    print(f"facts_qa: {r['entities']} fictional entities ({r['train_entities']} train, {r['held_out_entities']} "
          f"held out), {r['held_out_questions']} held-out questions; model {r['params']:,} parameters, {how}")
    rows = [("with retrieval (BM25 top-%d over the whole KB)" % r["k"], r["em_with_retrieval"], ">= 80%"),
            ("oracle passages (gold + %d distractors)" % (r["k"] - 1), r["em_oracle_passages"], ""),
            ("closed-book (same model, no passages)", r["em_closed_book"], "near chance"),
            ("chance (most frequent train answer per attribute)", r["em_chance"], "")]
    print(f"  {'held-out exact match':<52} {'EM':>7}  target")
    for name, value, target in rows:
        print(f"  {name:<52} {value:>7.1%}  {target}")
    print(f"  {'retrieval recall@%d of the gold passage' % r['k']:<52} {r['recall_at_k']:>7.1%}")
    for e in r["examples"][:3]:
        print(f"  e.g. {e['question']!r}: {e['answer']!r} -> retrieval {e['with_retrieval']!r}, "
              f"closed-book {e['closed_book']!r}")
    print(f"  total {r['wall_s']:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
