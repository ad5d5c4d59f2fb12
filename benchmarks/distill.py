#!/usr/bin/env python
"""Distillation: how much of the gap between a deep teacher and a half-depth student trained from
scratch does distillation close?

Every stage is the real CLI (``plugformer train``), on the built-in ``stdlib`` corpus, byte tokenizer:

1. teacher: N layers, ``--teacher-steps`` steps (CLM);
2. student from scratch: N/2 layers, ``--student-steps`` steps (CLM);
3. distilled student: N/2 layers, the same steps and batches, ``objective=distill
   objective.teacher=<teacher> objective.temperature=T objective.alpha=A``.

All three are scored by cross-entropy on the same validation windows (``val_loss`` of the CLM runs,
``val_ce`` of the distilled one, whose ``val_loss`` mixes in the KL term). Gap closed =
(CE_scratch − CE_distilled) / (CE_scratch − CE_teacher).

    python benchmarks/distill.py                       # a few minutes on 2 busy cores
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = ["tokenizer=byte", "data.max_bytes=3000000", "data.seq_len=64", "trainer.batch_size=16",
        "trainer.eval_batches=8", "trainer.eval_every=0", "trainer.save_every=0", "trainer.callbacks=[metrics]",
        "optimizer.lr=3e-3", "scheduler.warmup_steps=20", "model.d_model=128", "model.n_heads=4", "seed=0"]


def train(work: Path, name: str, threads: int, *args: str) -> dict:
    env = {**os.environ, "PLUGFORMER_CACHE": str(work / "cache")}
    run = work / name
    proc = subprocess.run([sys.executable, "-m", "plugformer", "train", *DATA, *args, f"threads={threads}",
                           f"hydra.run.dir={run}"], cwd=work, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads((run / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4, help="teacher depth (the student has half)")
    ap.add_argument("--teacher-steps", type=int, default=800)
    ap.add_argument("--student-steps", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the KL term (1 - alpha: cross-entropy)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        half = max(1, args.layers // 2)
        teacher = train(work, "teacher", args.threads, f"model.n_layers={args.layers}",
                        f"trainer.max_steps={args.teacher_steps}")
        scratch = train(work, "scratch", args.threads, f"model.n_layers={half}",
                        f"trainer.max_steps={args.student_steps}")
        distilled = train(work, "distilled", args.threads, f"model.n_layers={half}",
                          f"trainer.max_steps={args.student_steps}", "objective=distill",
                          f"objective.teacher={work / 'teacher' / 'checkpoints' / 'last'}",
                          f"objective.temperature={args.temperature}", f"objective.alpha={args.alpha}")
    ce = {"teacher": teacher["val_loss"], "scratch": scratch["val_loss"], "distilled": distilled["val_ce"]}
    gap = ce["scratch"] - ce["teacher"]
    closed = (ce["scratch"] - ce["distilled"]) / gap if gap > 0 else math.nan
    results = {"val_ce": ce, "val_perplexity": {k: math.exp(v) for k, v in ce.items()}, "gap_closed": closed,
               "params": {"teacher": teacher["params"], "student": scratch["params"]},
               "steps": {"teacher": args.teacher_steps, "student": args.student_steps},
               "temperature": args.temperature, "alpha": args.alpha, "wall_s": time.perf_counter() - t0}
    print("stdlib corpus, byte tokenizer, d_model 128; validation cross-entropy (perplexity):")
    print(f"  teacher   {args.layers} layers, {args.teacher_steps} steps, {teacher['params']:,} params: "
          f"{ce['teacher']:.4f} ({math.exp(ce['teacher']):.3f})")
    print(f"  student   {half} layers, {args.student_steps} steps from scratch, {scratch['params']:,} params: "
          f"{ce['scratch']:.4f} ({math.exp(ce['scratch']):.3f})")
    print(f"  student   {half} layers, {args.student_steps} steps distilled (T={args.temperature}, "
          f"alpha={args.alpha}): {ce['distilled']:.4f} ({math.exp(ce['distilled']):.3f})")
    print(f"  gap closed by distillation: {closed:.1%} of the teacher-vs-scratch gap ({results['wall_s']:.0f}s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
