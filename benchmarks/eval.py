"""Time to evaluate StoryGen-Eval-mini on this machine, per system and per turn type.

The oracle and the cascade run on the whole split (60 dialogues: 60 stories, 120 edits, 60 understanding turns);
a trained run (default: the tiny pipeline model of `make demo`) runs on the first --checkpoint-dialogues dialogues,
since each of its turns costs seconds on a CPU. Prints, per system, the wall time, the mean time of the system's own
call per turn type (story, edit, understand) and the scoring time (the rest: metrics and embeddings).
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval.py [--dialogues 60] [--checkpoint-dialogues 6]
"""
import argparse
import platform
import time

import torch

from audiochat.eval.evaluate import evaluate, load_scorer, resolve_split
from audiochat.eval.systems import make_system

p = argparse.ArgumentParser()
p.add_argument("--dialogues", type=int, default=60)
p.add_argument("--checkpoint", default="runs/pipeline/model")
p.add_argument("--checkpoint-dialogues", type=int, default=6)
p.add_argument("--steps", type=int, default=25)
a = p.parse_args()
torch.set_num_threads(1)

t0 = time.time()
split = resolve_split("storygen-eval-mini", progress=False)
t1 = time.time()
scorer = load_scorer()
t2 = time.time()
print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}; "
      f"split ready in {t1 - t0:.1f} s, scorer ready in {t2 - t1:.1f} s (cached after the first run)")
plan = [("oracle", a.dialogues), ("cascade", a.dialogues)]
if a.checkpoint: plan.append((f"sct={a.checkpoint}", a.checkpoint_dialogues))
print(f"{'system':10s} {'dialogues':>9s} {'wall s':>8s} {'s/dialogue':>10s} | mean call s: {'story':>6s} {'edit':>6s} {'understand':>10s} | "
      f"{'scoring s':>9s} | failed")
for spec, n in plan:
    system = make_system(spec, steps=a.steps)
    t = time.time()
    res = evaluate([system], split, scorer, dialogues=n, progress=False)
    wall = time.time() - t
    turns = res["systems"][system.name]["turns"]
    mean = lambda task, turns=turns: (lambda v: sum(v) / len(v) if v else float("nan"))([r["seconds"] for r in turns if r["task"] == task])
    calls = sum(r["seconds"] for r in turns)
    failed = sum(not r["ok"] for r in turns)
    print(f"{system.name:10s} {res['dialogues']:9d} {wall:8.1f} {wall / res['dialogues']:10.2f} | {'':13s}{mean('story'):6.2f} "
          f"{mean('edit'):6.2f} {mean('understand'):10.2f} | {wall - calls:9.1f} | {failed}/{len(turns)}")
